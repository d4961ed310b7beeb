package client

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// TestSubtreeIsolation: a subtree client holds and reports only keys under
// its subtree, in both filter modes, and still hears HUGZ: idle for many
// heartbeat timeouts, it never takes the server for dead.
func TestSubtreeIsolation(t *testing.T) {
	t.Parallel()
	for _, filter := range []Filter{FilterLocal, FilterServer} {
		t.Run(filter.String(), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, server.Config{})
			push := newRawPeer(t).pusher(srv.Port())
			for i := range 20 {
				set(t, push, fmt.Sprintf("/a/%d", i), "a")
				set(t, push, fmt.Sprintf("/b/%d", i), "b")
			}
			waitFor(t, 5*time.Second, "40 updates", func() bool { return srv.Stats().Sequence.Load() == 40 })
			c := dial(t, Options{Endpoints: []string{srv.endpoint()}, Subtree: "/a/", Filter: filter, HeartbeatTimeout: time.Second})
			ctx, cancel := context.WithCancel(context.Background())
			events := c.Watch(ctx)

			for i := range 20 {
				set(t, push, fmt.Sprintf("/b/%d", i), "b2")
				set(t, push, fmt.Sprintf("/a/%d", i), "a2")
			}
			seq, err := c.SetWait(ctx, "/a/mine", []byte("x"), 0)
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := c.Get("/a/mine"); seq <= 40 || !ok || string(v) != "x" {
				t.Fatalf("after SetWait: seq %d, Get = %q, %v", seq, v, ok)
			}
			waitFor(t, 5*time.Second, "81 updates", func() bool { return srv.Stats().Sequence.Load() == 81 })
			// Idle: only HUGZ (every 100ms) for three heartbeat timeouts (1s,
			// a margin for a loaded machine).
			time.Sleep(3 * time.Second)
			st := c.Stats()
			if st.Resyncs != 0 || st.Heartbeats < 5 {
				t.Fatalf("idle subtree client: %+v; want no re-join and HUGZ heard", st)
			}
			assertMatches(t, c, srv.Port(), "/a/")
			c.Snapshot().Range("", func(k string, _ []byte, _ int64) bool {
				if !strings.HasPrefix(k, "/a/") {
					t.Errorf("client holds %q outside its subtree", k)
				}
				return true
			})
			if c.Snapshot().Len() != 21 {
				t.Errorf("client holds %d keys, want 21", c.Snapshot().Len())
			}
			cancel()
			n := 0
			for ev := range events { // closed after cancel
				n++
				if ev.Type == EventUpdate && !strings.HasPrefix(ev.Key, "/a/") {
					t.Errorf("event for %q outside the subtree", ev.Key)
				}
			}
			if n != 21 {
				t.Errorf("%d events, want 21 updates", n)
			}
			if _, err := c.SetWait(context.Background(), "/b/x", []byte("x"), 0); filter == FilterServer && err != ErrOutsideSubtree {
				t.Errorf("SetWait outside the subtree with FilterServer: %v, want ErrOutsideSubtree", err)
			}
		})
	}
}
