package server

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
)

func TestSnapshotSubtree(t *testing.T) {
	srv := startServer(t, Config{})
	p := newPeer(t, srv.Port())
	push := p.push()
	for _, k := range []string{"/a/1", "/a/2", "/b/1", "/a", "/ab"} {
		set(t, push, k, "v"+k)
	}
	waitFor(t, 5*time.Second, "5 updates", func() bool { return srv.Stats().Sequence.Load() == 5 })

	dealer := p.dealer()
	got, end := snapshot(t, dealer, "/a/", 5*time.Second)
	if len(got) != 2 || string(got[0].Key) != "/a/1" || string(got[1].Key) != "/a/2" {
		t.Fatalf("snapshot /a/ = %v", keys(got))
	}
	if string(got[0].Body) != "v/a/1" || got[0].Seq != 1 || got[1].Seq != 2 {
		t.Errorf("KVSYNC carries body %q seq %d,%d", got[0].Body, got[0].Seq, got[1].Seq)
	}
	if end.Seq != 5 || string(end.Body) != "/a/" {
		t.Errorf("KTHXBAI seq %d body %q, want 5 /a/", end.Seq, end.Body)
	}
	all, end := snapshot(t, dealer, "", 5*time.Second)
	if len(all) != 5 || end.Seq != 5 {
		t.Errorf("whole snapshot has %d keys seq %d, want 5 and 5", len(all), end.Seq)
	}
}

func keys(ms []kvmsg.Msg) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Key))
	}
	return out
}

func TestUpdatesSequencedPublishedStored(t *testing.T) {
	srv := startServer(t, Config{})
	p := newPeer(t, srv.Port())
	push, sub := p.push(), p.sub("/u/")
	subscribed(t, push, sub, "/u/ping")
	base := srv.Stats().Sequence.Load()

	uuid := bytes.Repeat([]byte{7}, 16)
	m := kvmsg.Msg{Key: []byte("/u/x"), Seq: 999, UUID: uuid, Body: []byte("hello")}
	m = m.SetProp("ttl", "30").SetProp("owner", "me")
	send(t, push, m.Frames()...)
	got := recvMsg(t, sub, 2*time.Second)
	if got.Seq != base+1 || string(got.Key) != "/u/x" || string(got.Body) != "hello" || !bytes.Equal(got.UUID, uuid) {
		t.Fatalf("KVPUB = %+v, want seq %d", got, base+1)
	}
	if string(got.Props) != "ttl=30\nowner=me\n" {
		t.Errorf("properties %q not passed through as sent", got.Props)
	}
	// A delete: empty body.
	set(t, push, "/u/x", "")
	del := recvMsg(t, sub, 2*time.Second)
	if del.Seq != base+2 || len(del.Body) != 0 {
		t.Fatalf("delete KVPUB = %+v", del)
	}
	snap, end := snapshot(t, p.dealer(), "/u/x", 2*time.Second)
	if len(snap) != 0 || end.Seq != base+2 {
		t.Errorf("after delete snapshot has %v at seq %d", keys(snap), end.Seq)
	}
}

func TestTTLExpiry(t *testing.T) {
	srv := startServer(t, Config{})
	p := newPeer(t, srv.Port())
	push, sub := p.push(), p.sub("/t/")
	subscribed(t, push, sub, "/t/ping")

	set(t, push, "/t/short", "x", "ttl", "1")
	set(t, push, "/t/zero", "x", "ttl", "0")
	set(t, push, "/t/none", "x")
	sent := time.Now()
	first := recvMsg(t, sub, 2*time.Second)
	if string(first.Key) != "/t/short" {
		t.Fatalf("first KVPUB %q", first.Key)
	}
	if v, _ := first.Prop("ttl"); v != "1" {
		t.Errorf("ttl published as %q, want as sent (1)", v)
	}
	recvMsg(t, sub, 2*time.Second)
	last := recvMsg(t, sub, 2*time.Second)
	exp := recvMsg(t, sub, 3*time.Second)
	late := time.Since(sent) - time.Second
	if string(exp.Key) != "/t/short" || len(exp.Body) != 0 || exp.Seq != last.Seq+1 {
		t.Fatalf("expiry KVPUB = key %q body %q seq %d (last %d)", exp.Key, exp.Body, exp.Seq, last.Seq)
	}
	if late > time.Second {
		t.Errorf("expiry published %v after the ttl passed, want < 1s", late)
	}
	// ttl=0 and no ttl never expire.
	if f, err := testkit.RecvWithin(sub, 1500*time.Millisecond); err == nil {
		t.Fatalf("unexpected KVPUB %q", f[0])
	}
	snap, _ := snapshot(t, p.dealer(), "/t/", 2*time.Second)
	if got := fmt.Sprint(keys(snap)); got != "[/t/none /t/ping /t/zero]" {
		t.Errorf("after expiry snapshot = %s", got)
	}
	if n := srv.Stats().Expirations.Load(); n != 1 {
		t.Errorf("expirations = %d, want 1", n)
	}
}

func TestHeartbeat(t *testing.T) {
	srv := startServer(t, Config{Heartbeat: 100 * time.Millisecond})
	p := newPeer(t, srv.Port())
	sub := p.sub(kvmsg.KeyHeartbeat)
	start := time.Now()
	var n int
	for n < 5 {
		f := recv(t, sub, 2*time.Second)
		m, err := kvmsg.Decode(f, kvmsg.Limits{})
		if err != nil || string(m.Key) != kvmsg.KeyHeartbeat || m.Seq != 0 || len(m.Body) != 0 {
			t.Fatalf("heartbeat = %q (%v)", f, err)
		}
		n++
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("5 HUGZ at 100ms took %v", d)
	}
}

func TestHeartbeatOff(t *testing.T) {
	srv := startServer(t, Config{Heartbeat: -1})
	p := newPeer(t, srv.Port())
	sub := p.sub("")
	if f, err := testkit.RecvWithin(sub, 1500*time.Millisecond); err == nil {
		t.Fatalf("got %q with heartbeats off", f[0])
	}
}
