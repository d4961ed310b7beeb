package client

import (
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// TestLongKeyGetNeverAliases is issue 11 item 6: the client's map compares
// whole keys, so a Get of a key over 64 KiB finds nothing, never the value
// of a shorter key (it used to return "ab"'s or "/app/secret"'s value).
func TestLongKeyGetNeverAliases(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	p := newRawPeer(t)
	push := p.pusher(srv.Port())
	set(t, push, "ab", "short")
	set(t, push, "/app/secret", "secret")
	waitFor(t, 10*time.Second, "2 updates stored", func() bool { return srv.Stats().Sequence.Load() == 2 })

	c := dial(t, Options{Endpoints: []string{srv.endpoint()}})
	if v, ok := c.Get("ab"); !ok || string(v) != "short" {
		t.Fatalf("Get(ab) = %q, %v after join", v, ok)
	}
	snap := c.Snapshot()
	for _, n := range []int{65_538, 65_547, 70_000} {
		long := "ab" + strings.Repeat("Q", n-2)
		if v, ok := c.Get(long); ok {
			t.Errorf("Client.Get of a %d-byte key returned %q", n, v)
		}
		if v, ok := snap.Get(long); ok {
			t.Errorf("Snapshot().Get of a %d-byte key returned %q", n, v)
		}
	}
	if v, ok := snap.Get("/app/secret"); !ok || string(v) != "secret" {
		t.Fatalf("Snapshot().Get(/app/secret) = %q, %v", v, ok)
	}
}
