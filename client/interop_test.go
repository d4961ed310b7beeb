package client

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/clonekv/clonekv/bench/baseline"
	"github.com/clonekv/clonekv/internal/guideclient"
	"github.com/clonekv/clonekv/server"
)

// TestAgainstSeedDesignServer: the client joins, follows and writes against
// the seed-design server (bench/baseline: the Guide's Model Five, which
// sends no HUGZ, so silence detection is off).
func TestAgainstSeedDesignServer(t *testing.T) {
	t.Parallel()
	srv, err := baseline.New(baseline.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("baseline Run: %v", err)
		}
	})
	push := newRawPeer(t).pusher(srv.Port())
	for i := range 100 {
		set(t, push, fmt.Sprintf("/seed/%03d", i), fmt.Sprint(i))
	}
	waitFor(t, 5*time.Second, "100 updates", func() bool { return srv.Stats().Updates == 100 })

	c := dial(t, Options{Endpoints: []string{fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port())}, HeartbeatTimeout: -1})
	if c.Snapshot().Len() != 100 || c.Seq() != 100 {
		t.Fatalf("joined with %d keys at %d, want 100 at 100", c.Snapshot().Len(), c.Seq())
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if _, err := c.SetWait(wctx, "/seed/mine", []byte("m"), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteWait(wctx, "/seed/000"); err != nil {
		t.Fatal(err)
	}
	setEach(t, push, 50, "/seed/%03d", "again")
	assertMatches(t, c, srv.Port(), "")
	if st := c.Stats(); st.Resyncs != 0 {
		t.Fatalf("re-joined against the seed server: %+v", st)
	}
}

// TestGuideClientAgainstServer: a client written as the Guide's Model Five
// (internal/guideclient) joins and writes random ttl keys against our
// server; the server's map ends equal to the Guide client's, rolled forward
// by whatever was published after the Guide client stopped (its last
// update's echo, ttl expiries), which our own client recorded.
func TestGuideClientAgainstServer(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{Heartbeat: 200 * time.Millisecond})
	rec := dial(t, Options{Endpoints: []string{srv.endpoint()}, Subtree: "/client/", EventBuffer: 1 << 16})
	events := rec.Watch(t.Context())
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	res, err := guideclient.Run(ctx, guideclient.Config{
		Endpoint: "tcp://127.0.0.1", Port: srv.Port(), Interval: 20 * time.Millisecond, Rand: rand.New(rand.NewPCG(7, 7)),
	})
	if err != nil {
		t.Fatalf("guide client: %v", err)
	}
	if res.Sent < 20 || res.Received < res.Sent/2 || res.Malformed != 0 {
		t.Fatalf("guide client: %+v", res)
	}
	if res.Gaps > 0 {
		t.Fatalf("guide client saw %d gaps with only itself writing", res.Gaps)
	}
	want, snapSeq := snapshotOf(t, srv.Port(), "/client/")
	// Roll the guide client's map forward with what our client saw after it.
	rolled := maps.Clone(res.Map)
	byseq := map[int64]Event{}
	waitFor(t, 5*time.Second, "recorder at the snapshot", func() bool {
		for {
			select {
			case ev := <-events:
				if ev.Type == EventUpdate || ev.Type == EventDelete {
					byseq[ev.Seq] = ev
				}
				continue
			default:
			}
			return rec.Seq() >= snapSeq && len(events) == 0
		}
	})
	for seq := res.Sequence + 1; seq <= snapSeq; seq++ {
		ev, ok := byseq[seq]
		if !ok {
			t.Fatalf("recorder has no update %d", seq)
		}
		if ev.Type == EventDelete {
			delete(rolled, ev.Key)
		} else {
			rolled[ev.Key] = string(ev.Value)
		}
	}
	if !maps.Equal(rolled, want) {
		t.Fatalf("guide client (at %d, rolled to %d) differs from the server:\n%s", res.Sequence, snapSeq, diffMaps(rolled, want))
	}
	assertMatches(t, rec, srv.Port(), "/client/")
	t.Logf("guide client: sent %d, received %d, %d keys at seq %d; server at %d", res.Sent, res.Received, len(res.Map), res.Sequence, snapSeq)
}
