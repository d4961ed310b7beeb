package client

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
)

// TestJoinFollowWrite: a client joins a server holding keys, follows
// updates from another writer, writes its own (Set, SetWait, Delete), and
// matches a fresh snapshot throughout.
func TestJoinFollowWrite(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	p := newRawPeer(t)
	push := p.pusher(srv.Port())
	for i := range 50 {
		set(t, push, fmt.Sprintf("/pre/%02d", i), fmt.Sprint(i))
	}
	waitFor(t, 5*time.Second, "50 updates stored", func() bool { return srv.Stats().Sequence.Load() == 50 })

	c := dial(t, Options{Endpoints: []string{srv.endpoint()}})
	if got, ok := c.Get("/pre/07"); !ok || string(got) != "7" {
		t.Fatalf("Get(/pre/07) = %q, %v after join", got, ok)
	}
	if c.Seq() != 50 {
		t.Fatalf("Seq = %d after joining at 50", c.Seq())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	events := c.Watch(ctx)

	set(t, push, "/pre/07", "seven")
	ev := nextEvent(t, events, EventUpdate, 3*time.Second)
	if ev.Key != "/pre/07" || string(ev.Value) != "seven" || ev.Seq != 51 {
		t.Fatalf("event %+v, want update /pre/07=seven at 51", ev)
	}
	seq, err := c.SetWait(ctx, "/mine/a", []byte("A"), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Get("/mine/a"); !ok || string(v) != "A" || seq != 52 {
		t.Fatalf("after SetWait: Get = %q, %v; seq %d", v, ok, seq)
	}
	ev = nextEvent(t, events, EventUpdate, 3*time.Second)
	if ev.Key != "/mine/a" || ev.TTL != 30*time.Second {
		t.Fatalf("event %+v, want /mine/a with ttl 30s", ev)
	}
	if _, err := c.DeleteWait(ctx, "/pre/00"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("/pre/00"); ok {
		t.Fatal("/pre/00 still there after DeleteWait")
	}
	if err := c.Set("/mine/b", []byte("B"), 0); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events, EventDelete, 3*time.Second); ev.Key != "/pre/00" {
		t.Fatalf("delete event %+v", ev)
	}
	assertMatches(t, c, srv.Port(), "")
	if st := c.Stats(); st.Resyncs != 0 || st.Joins != 1 {
		t.Fatalf("unexpected re-joins: %+v", st)
	}
	if err := c.Set("", []byte("x"), 0); err == nil {
		t.Error("Set with an empty key succeeded")
	}
	if err := c.Set("k", nil, 0); err == nil {
		t.Error("Set with an empty value succeeded")
	}
	if err := c.Set(kvmsg.KeyHeartbeat, []byte("x"), 0); err == nil {
		t.Error("Set of the reserved key HUGZ succeeded")
	}
}
