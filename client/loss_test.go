package client

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// TestConvergesUnderLoss: the client's subscriber has a tiny receive
// high-water mark (and the server's PUB a small one) and its reader is
// stalled on purpose while a writer streams large updates, so updates are
// dropped in ZeroMQ. The client must notice the gap, re-join, and end equal
// to a fresh snapshot.
func TestConvergesUnderLoss(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{PubHWM: 100})
	var stall atomic.Bool
	hooks := &testHooks{beforeSubRead: func() {
		for deadline := time.Now().Add(5 * time.Second); stall.Load() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}}
	c := dial(t, Options{Endpoints: []string{srv.endpoint()}, SubRcvHWM: 10, hooks: hooks})

	p := newRawPeer(t)
	push := p.pusher(srv.Port())
	body := strings.Repeat("x", 4000)
	// Enough bytes to overflow the PUB's mark and both kernel socket buffers
	// (a few MB each on loopback) while the reader sleeps.
	const stalled, after = 6000, 500
	stall.Store(true)
	for i := range stalled {
		set(t, push, fmt.Sprintf("/k/%03d", i%300), fmt.Sprintf("%d-%s", i, body))
	}
	waitFor(t, 20*time.Second, "the server to take the stalled burst", func() bool {
		return srv.Stats().Sequence.Load() == stalled
	})
	stall.Store(false)
	for i := range after {
		set(t, push, fmt.Sprintf("/k/%03d", i%300), fmt.Sprintf("after-%d", i))
	}
	// The "after" burst may itself lose its tail while the client re-joins
	// (its HWM is 10). This server's HUGZ carry no sequence, so only a
	// later update shows such a loss (TestHugzTailLoss covers the HUGZ
	// that do): once the server has the burst, send one more update at a
	// time until the client is at the server's sequence (a marker sent
	// while the client's queue is still full is lost too).
	waitFor(t, 20*time.Second, "the server to take the after burst", func() bool {
		return srv.Stats().Sequence.Load() == stalled+after
	})
	for i := 0; ; i++ {
		set(t, push, "/k/end", fmt.Sprint(i))
		want := int64(stalled + after + i + 1)
		caught := false
		for end := time.Now().Add(time.Second); time.Now().Before(end) && !caught; time.Sleep(20 * time.Millisecond) {
			st := c.Stats()
			caught = st.Synced && st.Seq == want
		}
		if caught || i == 20 {
			break
		}
	}
	assertMatches(t, c, srv.Port(), "")
	st := c.Stats()
	if st.Gaps == 0 {
		t.Fatalf("no gap detected: the test did not provoke a loss (stats %+v)", st)
	}
	t.Logf("client stats: %+v", st)
}
