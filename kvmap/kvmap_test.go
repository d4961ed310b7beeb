package kvmap

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/clonekv/clonekv/kvmsg"
)

func msg(key, body string, seq int64) kvmsg.Msg {
	return kvmsg.Msg{Key: []byte(key), Seq: seq, Body: []byte(body)}
}

func TestEntryPacksEveryFrame(t *testing.T) {
	uuid := bytes.Repeat([]byte{9}, 16)
	m := kvmsg.Msg{Key: []byte("/k"), Seq: 42, UUID: uuid, Props: []byte("ttl=5\n"), Body: []byte("value")}
	e := NewEntry(m)
	got := e.Msg()
	if string(got.Key) != "/k" || got.Seq != 42 || !bytes.Equal(got.UUID, uuid) ||
		string(got.Props) != "ttl=5\n" || string(got.Body) != "value" {
		t.Fatalf("entry round trip = %+v", got)
	}
	// The entry copies: changing the message afterwards changes nothing.
	m.Body[0] = 'X'
	if string(e.Body()) != "value" {
		t.Fatalf("entry aliases the message: %q", e.Body())
	}
	// Appending to a returned slice cannot write into the next field.
	k := append(e.Key(), 'Z')
	_ = k
	if string(e.UUID()) != string(uuid) {
		t.Fatal("appending to Key overwrote the UUID")
	}
	empty := NewEntry(kvmsg.Msg{})
	if len(empty.Key()) != 0 || len(empty.Body()) != 0 || len(empty.UUID()) != 0 || len(empty.Props()) != 0 {
		t.Fatalf("empty entry = %+v", empty.Msg())
	}
}

func TestApplySetOverwriteDelete(t *testing.T) {
	m := New()
	m.Apply(msg("/a", "1", 1))
	m.Apply(msg("/b", "2", 2))
	m.Apply(msg("/a", "3", 3))
	if e, ok := m.Get([]byte("/a")); !ok || string(e.Body()) != "3" || e.Seq() != 3 {
		t.Fatalf("/a = %+v %v", e.Msg(), ok)
	}
	m.Apply(msg("/b", "", 4)) // empty body deletes
	if _, ok := m.Get([]byte("/b")); ok || m.Len() != 1 {
		t.Fatalf("/b still there, len %d", m.Len())
	}
	if !m.Delete([]byte("/a")) || m.Delete([]byte("/a")) || m.Len() != 0 {
		t.Fatal("Delete reported wrongly")
	}
}

func TestViewIsIsolatedFromLaterWrites(t *testing.T) {
	m := New()
	for i := 0; i < 1000; i++ {
		m.Apply(msg(fmt.Sprintf("/k/%04d", i), "old", int64(i+1)))
	}
	v := m.View()
	for i := 0; i < 1000; i += 2 {
		m.Apply(msg(fmt.Sprintf("/k/%04d", i), "new", 2000))
		m.Apply(msg(fmt.Sprintf("/k/%04d", i+1), "", 2001))
	}
	m.Apply(msg("/k/9999", "added", 3000))
	n := 0
	v.Ascend([]byte("/k/"), func(e Entry) bool {
		if string(e.Body()) != "old" {
			t.Fatalf("view sees a later write: %s=%s", e.Key(), e.Body())
		}
		n++
		return true
	})
	if n != 1000 || v.Len() != 1000 {
		t.Fatalf("view has %d (Len %d), want 1000", n, v.Len())
	}
	if m.Len() != 501 {
		t.Fatalf("map has %d, want 501", m.Len())
	}
}

func TestCursorWalksOnlyThePrefixInOrder(t *testing.T) {
	m := New()
	r := rand.New(rand.NewPCG(1, 2))
	var want []string
	for _, i := range r.Perm(500) {
		k := fmt.Sprintf("/a/%03d", i)
		want = append(want, k)
		m.Apply(msg(k, "v", 1))
		m.Apply(msg(fmt.Sprintf("/b/%03d", i), "v", 1))
	}
	m.Apply(msg("/a", "v", 1))  // shorter than the prefix
	m.Apply(msg("/a0", "v", 1)) // sorts right after "/a/" keys
	sort.Strings(want)
	c := m.View().Cursor([]byte("/a/"))
	var got []string
	for e, ok := c.Next(); ok; e, ok = c.Next() {
		got = append(got, string(e.Key()))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cursor gave %d keys, want %d in order", len(got), len(want))
	}
	if _, ok := c.Next(); ok {
		t.Fatal("Next after the end returned an entry")
	}
	all := m.View().Cursor(nil)
	n := 0
	for _, ok := all.Next(); ok; _, ok = all.Next() {
		n++
	}
	if n != 1002 {
		t.Fatalf("empty prefix walked %d, want 1002", n)
	}
	none := m.View().Cursor([]byte("/zzz"))
	if _, ok := none.Next(); ok {
		t.Fatal("cursor over an absent prefix returned an entry")
	}
}

// TestMemoryPerKey guards the map's footprint: a million 12-byte keys with
// 16-byte UUIDs and bodies stay under 100 bytes of live heap each (about
// 59: a 50-byte record in a slab and an 8-byte item in a B-tree node).
func TestMemoryPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million keys")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := New()
	uuid := make([]byte, 16)
	body := []byte("0123456789abcdef")
	const n = 1_000_000
	for i := 0; i < n; i++ {
		m.Apply(kvmsg.Msg{Key: []byte(fmt.Sprintf("/big/%07d", i)), UUID: uuid, Body: body})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (after.HeapAlloc - before.HeapAlloc) / n
	t.Logf("live heap per key: %d bytes", per)
	if per > 100 {
		t.Errorf("live heap per key %d bytes, want <= 100", per)
	}
	runtime.KeepAlive(m)
}

func TestApplyExpiringKeepsDeadline(t *testing.T) {
	m := New()
	m.ApplyExpiring(kvmsg.Msg{Key: []byte("/a"), Seq: 1, Body: []byte("x")}, 1234)
	m.Apply(kvmsg.Msg{Key: []byte("/b"), Seq: 2, Body: []byte("y")})
	if e, _ := m.Get([]byte("/a")); e.Expires() != 1234 {
		t.Fatalf("expires = %d, want 1234", e.Expires())
	}
	if e, _ := m.Get([]byte("/b")); e.Expires() != 0 {
		t.Fatalf("expires = %d, want 0", e.Expires())
	}
	m.Apply(kvmsg.Msg{Key: []byte("/a"), Seq: 3, Body: []byte("z")})
	if e, _ := m.Get([]byte("/a")); e.Expires() != 0 {
		t.Fatalf("overwrite without ttl kept expires %d", e.Expires())
	}
}

// TestLoadInKeyOrder: Load appends keys given in order and stores any other
// key as ApplyExpiring does.
func TestLoadInKeyOrder(t *testing.T) {
	m := New()
	for _, k := range []string{"/a", "/b", "/c", "/ab", "/b"} {
		m.Load(kvmsg.Msg{Key: []byte(k), Seq: int64(len(k)), Body: []byte("v" + k)}, 7)
	}
	if m.Len() != 4 {
		t.Fatalf("%d keys, want 4", m.Len())
	}
	var got []string
	m.View().Ascend(nil, func(e Entry) bool {
		got = append(got, string(e.Key()))
		if string(e.Body()) != "v"+string(e.Key()) || e.Expires() != 7 {
			t.Errorf("%q: body %q expires %d", e.Key(), e.Body(), e.Expires())
		}
		return true
	})
	if strings.Join(got, " ") != "/a /ab /b /c" {
		t.Fatalf("keys %v", got)
	}
}
