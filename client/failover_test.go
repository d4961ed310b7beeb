package client

import (
	"fmt"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/server"
)

// TestFailoverFirstDown: the first endpoint has no server at all; the client
// moves on and follows the second.
func TestFailoverFirstDown(t *testing.T) {
	t.Parallel()
	b := startServer(t, server.Config{})
	set(t, newRawPeer(t).pusher(b.Port()), "/b", "B")
	dead := fmt.Sprintf("tcp://127.0.0.1:%d", testkit.FreePorts(t))
	start := time.Now()
	c := dial(t, Options{Endpoints: []string{dead, b.endpoint()}, HeartbeatTimeout: 300 * time.Millisecond})
	took := time.Since(start)
	if st := c.Stats(); st.Server != b.endpoint() {
		t.Fatalf("following %s, want %s", st.Server, b.endpoint())
	}
	// Three heartbeat timeouts is the budget the issue gives; a refused
	// connection is noticed much sooner.
	if took > 3*300*time.Millisecond+time.Second {
		t.Fatalf("took %v to follow the second endpoint", took)
	}
	assertMatches(t, c, b.Port(), "")
	t.Logf("following the second endpoint after %v", took.Round(time.Millisecond))
}

// TestFailoverFirstGoesDown: the client follows the first server, which
// stops; within about three heartbeat intervals it follows the second and
// matches it.
func TestFailoverFirstGoesDown(t *testing.T) {
	t.Parallel()
	a := startServer(t, server.Config{})
	b := startServer(t, server.Config{})
	set(t, newRawPeer(t).pusher(a.Port()), "/a", "A")
	set(t, newRawPeer(t).pusher(b.Port()), "/b", "B")
	waitFor(t, 5*time.Second, "both servers stored a key", func() bool {
		return a.Stats().Sequence.Load() == 1 && b.Stats().Sequence.Load() == 1
	})
	const hb = 100 * time.Millisecond // the servers' HUGZ interval
	c := dial(t, Options{Endpoints: []string{a.endpoint(), b.endpoint()}, HeartbeatTimeout: 3 * hb})
	if st := c.Stats(); st.Server != a.endpoint() {
		t.Fatalf("following %s first, want %s", st.Server, a.endpoint())
	}
	events := c.Watch(t.Context())
	a.stop(t)
	stopped := time.Now()
	sw := nextEvent(t, events, EventServerSwitched, 5*time.Second)
	took := time.Since(stopped)
	if sw.Server != b.endpoint() || sw.From != a.endpoint() {
		t.Fatalf("switch event %+v", sw)
	}
	if took > 3*hb+time.Second { // slack for -race on a busy 2-core box
		t.Fatalf("took %v to switch", took)
	}
	assertMatches(t, c, b.Port(), "")
	if _, ok := c.Get("/a"); ok {
		t.Fatal("key of the first server still held after switching")
	}
	t.Logf("switched %v after the first server stopped", took.Round(time.Millisecond))
}

// TestFailoverSilentServer: the first server stays connected but goes
// silent (no updates, no HUGZ): after the heartbeat timeout the client moves
// to the second.
func TestFailoverSilentServer(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	b := startServer(t, server.Config{})
	const timeout = time.Second
	c := dial(t, Options{Endpoints: []string{f.endpoint(), b.endpoint()}, HeartbeatTimeout: timeout})
	events := c.Watch(t.Context())
	if st := c.Stats(); st.Server != f.endpoint() {
		t.Fatalf("following %s first", st.Server)
	}
	time.Sleep(3 * timeout / 2)
	if st := c.Stats(); st.Resyncs != 0 {
		t.Fatalf("re-joined while the fake server sent HUGZ: %+v", st)
	}
	var lastHugz time.Time
	f.do(func(s *fakeState) { s.hugz, lastHugz = false, s.lastHugz })
	silent := time.Now()
	started := nextEvent(t, events, EventResyncStarted, 10*time.Second)
	// The client heard the last HUGZ no earlier than it was sent, so it
	// cannot have given up less than the timeout after that.
	if since := time.Since(lastHugz); since < timeout {
		t.Fatalf("gave up %v after the last HUGZ was sent, before the %v timeout (reason %q)", since, timeout, started.Reason)
	}
	nextEvent(t, events, EventServerSwitched, 10*time.Second)
	took := time.Since(silent)
	if took > 5*timeout {
		t.Fatalf("switched %v after the silence began (reason %q)", took, started.Reason)
	}
	if st := c.Stats(); st.Timeouts == 0 {
		t.Fatalf("no timeout counted: %+v", st)
	}
	assertMatches(t, c, b.Port(), "")
}
