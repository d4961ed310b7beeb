package gateway_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/gateway"
	"github.com/clonekv/clonekv/internal/testkit"
)

// errBody is an error answer as the tests read it.
type errBody struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

func TestAPISnapshotGetPutDelete(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	other := r.dial(t, "")

	s1 := r.put(t, "/app/a", "one")
	s2 := r.put(t, "/app/b", "two")
	r.put(t, "/other/x", "elsewhere")
	if s2 <= s1 {
		t.Fatalf("sequences %d then %d", s1, s2)
	}
	// A key without a leading slash, and a binary value through JSON.
	var w gateway.Written
	if code, body := r.do(t, "PUT", "/v1/kv?key=plain", "text/plain", strings.NewReader("no slash"), &w); code != 200 {
		t.Fatalf("PUT ?key=plain: %d %s", code, body)
	}
	bin := []byte{0xff, 0x00, 0xfe}
	js := fmt.Sprintf(`{"value":%q,"encoding":"base64"}`, base64.StdEncoding.EncodeToString(bin))
	if code, body := r.do(t, "PUT", "/v1/kv/app/bin", "application/json", strings.NewReader(js), &w); code != 200 {
		t.Fatalf("PUT json: %d %s", code, body)
	}
	last := w.Seq

	// Each write went through the server: another client sees it.
	testkit.WaitFor(t, 10*time.Second, 5*time.Millisecond, "the writes at another client", func() bool { return other.Seq() >= last })
	if v, _ := other.Get("/app/a"); string(v) != "one" {
		t.Fatalf("other client: /app/a = %q", v)
	}
	if v, _ := other.Get("/app/bin"); !bytes.Equal(v, bin) {
		t.Fatalf("other client: /app/bin = %x", v)
	}
	if v, _ := other.Get("plain"); string(v) != "no slash" {
		t.Fatalf("other client: plain = %q", v)
	}

	// The snapshot of a prefix, at one sequence.
	var list gateway.List
	if code, body := r.do(t, "GET", "/v1/kv/app/", "", nil, &list); code != 200 {
		t.Fatalf("GET /app/: %d %s", code, body)
	}
	if list.Seq < last || list.Prefix != "/app/" || len(list.Items) != 3 {
		t.Fatalf("GET /app/: %+v", list)
	}
	got := map[string]gateway.Item{}
	for _, it := range list.Items {
		got[it.Key] = it
	}
	if it := got["/app/a"]; it.Value != "one" || it.Encoding != "utf8" || it.Seq != s1 {
		t.Fatalf("/app/a: %+v", it)
	}
	if it := got["/app/bin"]; it.Encoding != "base64" || it.Value != base64.StdEncoding.EncodeToString(bin) {
		t.Fatalf("/app/bin: %+v", it)
	}
	// limit and after page through the prefix.
	r.do(t, "GET", "/v1/kv/app/?limit=2", "", nil, &list)
	if len(list.Items) != 2 || !list.More {
		t.Fatalf("limit=2: %+v", list)
	}
	after := list.Items[1].Key
	list = gateway.List{}
	r.do(t, "GET", "/v1/kv/app/?limit=2&after="+after, "", nil, &list)
	if len(list.Items) != 1 || list.More || list.Items[0].Key != "/app/bin" {
		t.Fatalf("after: %+v", list)
	}

	// One key; 404 when absent.
	var one gateway.One
	if code, _ := r.do(t, "GET", "/v1/kv/app/b?exact=1", "", nil, &one); code != 200 || one.Item.Value != "two" || one.Item.Key != "/app/b" || one.Item.Seq != s2 || one.Seq < last {
		t.Fatalf("GET /app/b: %d %+v", code, one)
	}
	if code, _ := r.do(t, "GET", "/v1/kv?key=plain&exact=1", "", nil, &one); code != 200 || one.Item.Value != "no slash" {
		t.Fatalf("GET ?key=plain: %d %+v", code, one)
	}
	var e errBody
	if code, _ := r.do(t, "GET", "/v1/kv/app/nope?exact=1", "", nil, &e); code != 404 || e.Code != "not_found" {
		t.Fatalf("absent key: %d %+v", code, e)
	}

	// Delete: answered with its sequence, then gone here and at the client.
	if code, body := r.do(t, "DELETE", "/v1/kv/app/a", "", nil, &w); code != 200 || w.Seq <= last {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, _ := r.do(t, "GET", "/v1/kv/app/a?exact=1", "", nil, &e); code != 404 {
		t.Fatalf("deleted key still served: %d", code)
	}
	del := w.Seq
	testkit.WaitFor(t, 10*time.Second, 5*time.Millisecond, "the delete at another client", func() bool { return other.Seq() >= del })
	if _, ok := other.Get("/app/a"); ok {
		t.Fatal("other client still has /app/a")
	}
}

func TestAPIPutTTLExpires(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	var w gateway.Written
	if code, body := r.do(t, "PUT", "/v1/kv/t/k?ttl=1s", "text/plain", strings.NewReader("short"), &w); code != 200 || w.TTL != 1 {
		t.Fatalf("PUT ttl: %d %s", code, body)
	}
	var one gateway.One
	if code, _ := r.do(t, "GET", "/v1/kv/t/k?exact=1", "", nil, &one); code != 200 || one.Item.Expires == "" {
		t.Fatalf("GET: %d %+v (want an expiry)", code, one)
	}
	if at, err := time.Parse(time.RFC3339, one.Item.Expires); err != nil || time.Until(at) > 5*time.Second {
		t.Fatalf("expires %q: %v", one.Item.Expires, err)
	}
	testkit.WaitFor(t, 15*time.Second, 20*time.Millisecond, "the key to expire", func() bool {
		code, _ := r.do(t, "GET", "/v1/kv/t/k?exact=1", "", nil, nil)
		return code == 404
	})
	// The same through a JSON body's ttl field.
	if code, body := r.do(t, "PUT", "/v1/kv/t/j", "application/json", strings.NewReader(`{"value":"v","ttl":"1"}`), &w); code != 200 || w.TTL != 1 {
		t.Fatalf("PUT json ttl: %d %s", code, body)
	}
	testkit.WaitFor(t, 15*time.Second, 20*time.Millisecond, "the JSON-set key to expire", func() bool {
		code, _ := r.do(t, "GET", "/v1/kv/t/j?exact=1", "", nil, nil)
		return code == 404
	})
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{gateway: func(c *gateway.Config) { c.MaxBody = 1000 }})
	before := r.gw.Stats().Client.Seq
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"oversized key", "PUT", "/v1/kv/" + strings.Repeat("k", 300), "text/plain", "v", 400, "key_too_large"},
		{"bad ttl", "PUT", "/v1/kv/a?ttl=soon", "text/plain", "v", 400, "bad_ttl"},
		{"negative ttl", "PUT", "/v1/kv/a?ttl=-3s", "text/plain", "v", 400, "bad_ttl"},
		{"ttl too long", "PUT", "/v1/kv/a?ttl=3000000000", "text/plain", "v", 400, "bad_ttl"},
		{"empty value", "PUT", "/v1/kv/a", "text/plain", "", 400, "empty_value"},
		{"value too large", "PUT", "/v1/kv/a", "text/plain", strings.Repeat("v", 1001), 413, "too_large"},
		{"reserved key", "PUT", "/v1/kv?key=HUGZ", "text/plain", "v", 400, "reserved_key"},
		{"no key", "PUT", "/v1/kv", "text/plain", "v", 400, "bad_key"},
		{"key twice", "PUT", "/v1/kv/a?key=b", "text/plain", "v", 400, "bad_key"},
		{"unknown route", "GET", "/v1/nothing", "", "", 404, "unknown_route"},
		{"unknown version", "GET", "/v1/kv2/x", "", "", 404, "unknown_route"},
		{"method", "POST", "/v1/kv/a", "text/plain", "v", 405, "method_not_allowed"},
		{"bad limit", "GET", "/v1/kv/?limit=0", "", "", 400, "bad_limit"},
		{"watch method", "PUT", "/v1/watch", "", "", 405, "method_not_allowed"},
	}
	for _, c := range cases {
		var e errBody
		code, body := r.do(t, c.method, c.path, c.ctype, strings.NewReader(c.body), &e)
		if code != c.status || e.Code != c.code || e.Error == "" {
			t.Errorf("%s: %s %s = %d %s, want %d code %q", c.name, c.method, c.path, code, body, c.status, c.code)
		}
	}
	if st := r.gw.Stats().Client; st.Seq != before || st.Keys != 0 {
		t.Fatalf("refused writes reached the map: seq %d→%d, %d keys", before, st.Seq, st.Keys)
	}
}

func TestAPIReadOnlyAndToken(t *testing.T) {
	t.Parallel()
	ro := newRig(t, rigOptions{gateway: func(c *gateway.Config) { c.ReadOnly = true }})
	var e errBody
	if code, _ := ro.do(t, "PUT", "/v1/kv/a", "text/plain", strings.NewReader("v"), &e); code != 403 || e.Code != "read_only" {
		t.Fatalf("read-only PUT: %d %+v", code, e)
	}
	if code, _ := ro.do(t, "DELETE", "/v1/kv/a", "", nil, &e); code != 403 {
		t.Fatalf("read-only DELETE: %d", code)
	}
	if code, _ := ro.do(t, "GET", "/v1/kv/", "", nil, nil); code != 200 {
		t.Fatalf("read-only GET: %d", code)
	}

	tok := newRig(t, rigOptions{gateway: func(c *gateway.Config) { c.Token = "s3cret" }})
	if code, _ := tok.do(t, "PUT", "/v1/kv/a", "text/plain", strings.NewReader("v"), &e); code != 401 || e.Code != "unauthorized" {
		t.Fatalf("PUT without token: %d %+v", code, e)
	}
	if code, _ := tok.do(t, "PUT", "/v1/kv/a", "text/plain", strings.NewReader("v"), &e, "Authorization", "Bearer wrong"); code != 401 {
		t.Fatalf("PUT with a wrong token: %d", code)
	}
	var w gateway.Written
	if code, body := tok.do(t, "PUT", "/v1/kv/a", "text/plain", strings.NewReader("v"), &w, "Authorization", "Bearer s3cret"); code != 200 || w.Seq == 0 {
		t.Fatalf("PUT with the token: %d %s", code, body)
	}
	if code, _ := tok.do(t, "GET", "/v1/kv/a?exact=1", "", nil, nil); code != 200 {
		t.Fatalf("GET needs no token: %d", code)
	}
}

// Concurrent PUTs each get their own sequence, and the map ends as the
// highest sequence left it; a watcher sees them in sequence order with the
// values each PUT was answered for.
func TestAPIConcurrentPutsInSeqOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	st := r.watch(t, "?prefix=/c/", "")
	st.untilSynced(t)

	const writers, each = 8, 25
	type res struct {
		seq   int64
		value string
	}
	var mu sync.Mutex
	var all []res
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				v := fmt.Sprintf("w%d-%d", i, j)
				var w gateway.Written
				code, body := r.do(t, "PUT", "/v1/kv/c/same", "text/plain", strings.NewReader(v), &w)
				if code != 200 {
					t.Errorf("PUT: %d %s", code, body)
					return
				}
				mu.Lock()
				all = append(all, res{w.Seq, v})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	for i := 1; i < len(all); i++ {
		if all[i].seq == all[i-1].seq {
			t.Fatalf("two PUTs answered with sequence %d", all[i].seq)
		}
	}
	final := all[len(all)-1]
	var one gateway.One
	testkit.WaitFor(t, 10*time.Second, 5*time.Millisecond, "the last PUT in the gateway's map", func() bool {
		r.do(t, "GET", "/v1/kv/c/same?exact=1", "", nil, &one)
		return one.Item.Seq >= final.seq
	})
	if one.Item.Value != final.value || one.Item.Seq != final.seq {
		t.Fatalf("final value %q at %d, want %q (the highest sequence, %d)", one.Item.Value, one.Item.Seq, final.value, final.seq)
	}
	for i, want := range all {
		ev := st.next(t, 20*time.Second)
		d := ev.decode(t)
		if ev.name != "put" || d.Seq != want.seq || d.Value != want.value {
			t.Fatalf("watch event %d: %s %+v, want put seq %d %q", i, ev.name, d, want.seq, want.value)
		}
	}
}
