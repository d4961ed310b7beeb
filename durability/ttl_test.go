package durability

import (
	"fmt"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
)

// TestTTLAcrossRestart (issue 12, 3): keys with a ttl of 2 s, the server
// stopped for 3 s: each is deleted, and the delete published, right after
// the start. Keys with a longer ttl (8 s) keep their original deadline:
// present after the restart, deleted at set time + 8 s, not restart + 8 s.
func TestTTLAcrossRestart(t *testing.T) {
	t.Parallel()
	const short, long, n = 2, 8, 50
	dir, port := t.TempDir(), testkit.FreePorts(t)
	s := newSockets(t, port)
	p := start(t, dir, port)
	push := s.connect(zmq.PUSH, 2)
	setAt := time.Now()
	for i := range n {
		set(t, push, fmt.Sprintf("/t%d/%02d", short, i), "v", short)
		set(t, push, fmt.Sprintf("/t%d/%02d", long, i), "v", long)
	}
	waitFor(t, 10*time.Second, "the ttl keys stored", func() bool {
		m, _, _ := snapshotOf(t, s, "/t")
		return len(m) == 2*n
	})
	storedBy := time.Now()
	p.term(t)
	// Down until every short deadline has passed (with a second to spare).
	waitFor(t, 10*time.Second, "the short deadlines pass", func() bool { return time.Since(storedBy) > (short+1)*time.Second })

	rec := record(s)
	p = start(t, dir, port)
	serving := time.Now()
	waitFor(t, 10*time.Second, "the expired keys deleted and published", func() bool {
		pubs, _ := rec.snapshot()
		return countDeletes(pubs, fmt.Sprintf("/t%d/", short)) == n
	})
	published := time.Since(serving)
	m, _, _ := snapshotOf(t, s, "/t")
	if len(m) != n {
		t.Fatalf("after restart: %d ttl keys, want the %d with ttl %ds", len(m), n, long)
	}
	for k, v := range m {
		if !strings.HasPrefix(k, fmt.Sprintf("/t%d/", long)) || prop(v.Props, "ttl") != fmt.Sprint(long) {
			t.Fatalf("after restart: %q %+v", k, v)
		}
	}
	waitFor(t, 30*time.Second, "the long-ttl keys expire", func() bool {
		pubs, _ := rec.snapshot()
		return countDeletes(pubs, fmt.Sprintf("/t%d/", long)) == n
	})
	rec.finish()
	pubs, _ := rec.snapshot()
	var first, last time.Time
	for _, u := range pubs {
		if strings.HasPrefix(u.Key, fmt.Sprintf("/t%d/", long)) && u.Body == "" {
			if first.IsZero() {
				first = u.At
			}
			last = u.At
		}
	}
	// The deadline was fixed when the updates were proposed (between setAt
	// and storedBy): the deletes come then, plus the reaper's tick and a
	// loaded machine's delay, and well before restart + ttl.
	earliest, latest := setAt.Add(long*time.Second), storedBy.Add(long*time.Second+1500*time.Millisecond)
	if first.Before(earliest.Add(-50*time.Millisecond)) || last.After(latest) {
		t.Fatalf("ttl %ds keys expired from %v to %v after set, want between %v and %v",
			long, first.Sub(setAt), last.Sub(setAt), earliest.Sub(setAt), latest.Sub(setAt))
	}
	t.Logf("short-ttl deletes published %v after serving; long-ttl deletes %v..%v after set (restart + ttl would be %v)",
		published.Round(time.Millisecond), first.Sub(setAt).Round(time.Millisecond), last.Sub(setAt).Round(time.Millisecond), serving.Add(long*time.Second).Sub(setAt).Round(time.Millisecond))
	p.term(t)
}

func countDeletes(pubs []pub, prefix string) int {
	n := 0
	for _, u := range pubs {
		if strings.HasPrefix(u.Key, prefix) && u.Body == "" {
			n++
		}
	}
	return n
}
