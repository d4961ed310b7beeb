package durability

import (
	"fmt"
	"regexp"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
)

var historyProp = regexp.MustCompile(`^history=[0-9a-f]{32}\nresume=1\n$`)

// load sets n keys under prefix (every tenth with a ttl of an hour) and a
// sentinel after them, and waits until the sentinel is stored.
func load(t *testing.T, s *sockets, prefix string, n int) {
	t.Helper()
	push := s.connect(zmq.PUSH, 2)
	for i := range n {
		ttl := 0
		if i%10 == 0 {
			ttl = 3600
		}
		set(t, push, fmt.Sprintf("%s%06d", prefix, i), fmt.Sprintf("value-%d", i), ttl)
	}
	set(t, push, "/end/"+prefix, "done", 0)
	waitFor(t, 120*time.Second, "the load stored", func() bool {
		m, _, _ := snapshotOf(t, s, "/end/"+prefix)
		return len(m) == 1
	})
}

// TestRestartKeepsEverything (issue 12, 1): 100,000 keys, some with a ttl,
// SIGTERM, start again on the same directory: the map, every value and
// sequence, the sequence and the history id are the same, and a
// subscriber connected across the restart receives no update at all.
func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	dir, port := t.TempDir(), testkit.FreePorts(t)
	s := newSockets(t, port)
	p := start(t, dir, port)
	load(t, s, "/r/", n)
	before, seq, end := snapshotOf(t, s, "")
	if len(before) != n+1 || seq != int64(n+1) || !historyProp.MatchString(end) {
		t.Fatalf("before restart: %d keys, sequence %d, KTHXBAI properties %q", len(before), seq, end)
	}
	rec := record(s)
	waitFor(t, 10*time.Second, "the subscriber gets HUGZ", func() bool { _, h := rec.snapshot(); return len(h) > 0 })
	p.term(t)

	restarted := time.Now()
	p = start(t, dir, port)
	t.Logf("%d keys: restart to serving %v", n, time.Since(restarted).Round(time.Millisecond))
	after, seq2, end2 := snapshotOf(t, s, "")
	if seq2 != seq || end2 != end {
		t.Fatalf("after restart: sequence %d history %q, want %d %q", seq2, end2, seq, end)
	}
	if len(after) != len(before) {
		t.Fatalf("after restart: %d keys, want %d", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("key %q: %+v after restart, want %+v", k, after[k], v)
		}
	}
	// The subscriber (reconnected by now) hears HUGZ from the new process
	// carrying the same history and sequence, and no update at all.
	serving := time.Now()
	waitFor(t, 10*time.Second, "HUGZ from the restarted server", func() bool {
		_, h := rec.snapshot()
		return len(h) > 0 && h[len(h)-1].At.After(serving)
	})
	rec.finish()
	pubs, hugz := rec.snapshot()
	if len(pubs) != 0 {
		t.Fatalf("the subscriber received %d updates across the restart (first %+v), want none", len(pubs), pubs[0])
	}
	last := hugz[len(hugz)-1]
	if prop(last.Props, "history") != prop(end, "history") || prop(last.Props, "history") == "" || prop(last.Props, "seq") != fmt.Sprint(seq) || last.Seq != 0 {
		t.Fatalf("HUGZ %+v, want %q, seq=%d and sequence frame 0", last, end, seq)
	}
	p.stop(t, syscall.SIGTERM)
}
