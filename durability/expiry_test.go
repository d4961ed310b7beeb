package durability

import (
	"fmt"
	"sort"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
)

// TestMassExpiryPaced (issue 11, item 2): 20,000 keys expire together.
// The expiries go through the log in paced batches, so a subscriber that
// keeps up sees every sequence (no gap), and an update sent while they
// stream is published within a second.
func TestMassExpiryPaced(t *testing.T) {
	t.Parallel()
	const n = 20_000
	dir, port := t.TempDir(), testkit.FreePorts(t)
	s := newSockets(t, port)
	p := start(t, dir, port)
	rec := record(s)
	// The probe's own subscriber: the PUB filters by prefix, so it sees
	// the probe when the server publishes it, not after the recorder has
	// worked through the deletes queued before it.
	probe := record(s, "/probe")
	waitFor(t, 10*time.Second, "subscribed", func() bool {
		_, h := rec.snapshot()
		_, hp := probe.snapshot()
		return len(h) > 0 && len(hp) > 0
	})
	push := s.connect(zmq.PUSH, 2)
	for i := range n {
		set(t, push, fmt.Sprintf("/x/%05d", i), "v", 2)
	}
	waitFor(t, 60*time.Second, "the keys published", func() bool { u, _ := rec.snapshot(); return len(u) >= n })
	waitFor(t, 30*time.Second, "the first expiry", func() bool { u, _ := rec.snapshot(); return len(u) > n })
	sent := time.Now()
	set(t, push, "/probe", "during the expiry", 0)
	var probeAt time.Time
	waitFor(t, 30*time.Second, "the probe published", func() bool {
		u, _ := probe.snapshot()
		if len(u) > 0 {
			probeAt = u[0].At
		}
		return len(u) > 0
	})
	probe.finish()
	waitFor(t, 60*time.Second, "every expiry published", func() bool { u, _ := rec.snapshot(); return len(u) >= 2*n+1 })
	rec.finish()
	pubs, _ := rec.snapshot()
	sort.Slice(pubs, func(i, j int) bool { return pubs[i].Seq < pubs[j].Seq })
	for i, u := range pubs {
		if u.Seq != int64(i+1) {
			t.Fatalf("gap: update %d has sequence %d (of %d received)", i+1, u.Seq, len(pubs))
		}
	}
	var first, last time.Time
	for _, u := range pubs[n:] {
		if u.Key != "/probe" {
			if first.IsZero() || u.At.Before(first) {
				first = u.At
			}
			if u.At.After(last) {
				last = u.At
			}
		}
	}
	lat := probeAt.Sub(sent)
	t.Logf("%d expiries published over %v; an update sent during them published after %v", n, last.Sub(first).Round(time.Millisecond), lat.Round(time.Microsecond))
	if lat > time.Second {
		t.Fatalf("update sent during the mass expiry published after %v, want within 1s", lat)
	}
	p.term(t)
}
