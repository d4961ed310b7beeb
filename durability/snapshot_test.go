package durability

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/raftlog"
)

// TestSnapshotWhileStreaming (issue 12, 5): with FSM snapshots every few
// entries, updates stream (overwriting a few hundred keys) while a
// subscriber records every one. Each snapshot file holds exactly the state
// at its sequence (replaying the recorded updates up to it), and a restart
// from the newest snapshot plus the log after it serves the same map as the
// live server did.
func TestSnapshotWhileStreaming(t *testing.T) {
	t.Parallel()
	const keys, groups, group = 300, 30, 200
	dir, port := t.TempDir(), testkit.FreePorts(t)
	s := newSockets(t, port)
	p := start(t, dir, port, "--snapshot-interval", "50ms", "--snapshot-threshold", "4")
	rec := record(s)
	waitFor(t, 10*time.Second, "subscribed", func() bool { _, h := rec.snapshot(); return len(h) > 0 })
	push := s.connect(zmq.PUSH, 2)
	total := 0
	for g := range groups {
		for range group {
			set(t, push, fmt.Sprintf("/s/%03d", total%keys), fmt.Sprintf("%d.%d", g, total), 0)
			total++
		}
		waitFor(t, 30*time.Second, "the group published", func() bool { u, _ := rec.snapshot(); return len(u) >= total })
	}
	live, liveSeq, _ := snapshotOf(t, s, "")
	rec.finish()
	p.stop(t, syscall.SIGKILL)
	pubs, _ := rec.snapshot()
	if len(pubs) != total || liveSeq != int64(total) {
		t.Fatalf("%d updates published, live sequence %d, want %d", len(pubs), liveSeq, total)
	}
	sort.Slice(pubs, func(i, j int) bool { return pubs[i].Seq < pubs[j].Seq })
	for i, u := range pubs {
		if u.Seq != int64(i+1) {
			t.Fatalf("published sequences not 1..%d: position %d has %d", total, i, u.Seq)
		}
	}
	// stateAt replays the recorded updates up to seq.
	stateAt := func(seq int64) map[string]stored {
		m := map[string]stored{}
		for _, u := range pubs[:seq] {
			m[u.Key] = stored{Body: u.Body, Seq: u.Seq}
		}
		return m
	}
	if want := stateAt(int64(total)); len(live) != len(want) {
		t.Fatalf("live map has %d keys, the recorded updates make %d", len(live), len(want))
	} else {
		for k, w := range want {
			if live[k] != w {
				t.Fatalf("live %q = %+v, recorded %+v", k, live[k], w)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(filepath.Dir(f), ".tmp") {
			continue
		}
		r, err := readSnapshotFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want := stateAt(r.Seq)
		if r.Map.Len() != len(want) {
			t.Fatalf("%s: %d keys at sequence %d, want %d", f, r.Map.Len(), r.Seq, len(want))
		}
		for k, w := range want {
			e, ok := r.Map.Get([]byte(k))
			if !ok || string(e.Body()) != w.Body || e.Seq() != w.Seq {
				t.Fatalf("%s (sequence %d): %q is %q@%d (present %v), want %q@%d", f, r.Seq, k, e.Body(), e.Seq(), ok, w.Body, w.Seq)
			}
		}
		checked++
		t.Logf("snapshot %s: sequence %d of %d, %d keys: the state at its sequence", filepath.Base(filepath.Dir(f)), r.Seq, total, r.Map.Len())
	}
	if checked == 0 {
		t.Fatalf("no snapshot taken while %d updates streamed", total)
	}

	// A log tail after the newest snapshot: more updates with snapshots
	// off, then kill -9 again; the restart restores snapshot plus tail.
	p = start(t, dir, port, "--snapshot-threshold", "1000000", "--snapshot-interval", "1h")
	push = s.connect(zmq.PUSH, 2)
	for i := range 1000 {
		set(t, push, fmt.Sprintf("/s/%03d", i%keys), fmt.Sprintf("tail.%d", i), 0)
	}
	waitFor(t, 30*time.Second, "the tail stored", func() bool { _, seq, _ := snapshotOf(t, s, "/s/000"); return seq == int64(total+1000) })
	live, liveSeq, _ = snapshotOf(t, s, "")
	p.stop(t, syscall.SIGKILL)

	p = start(t, dir, port)
	got, seq, _ := snapshotOf(t, s, "")
	if seq != liveSeq || len(got) != len(live) {
		t.Fatalf("restored %d keys at sequence %d, live server had %d at %d", len(got), seq, len(live), liveSeq)
	}
	for k, v := range live {
		if got[k] != v {
			t.Fatalf("restored %q = %+v, live %+v", k, got[k], v)
		}
	}
	p.term(t)
}

func readSnapshotFile(path string) (raftlog.Restored, error) {
	f, err := os.Open(path)
	if err != nil {
		return raftlog.Restored{}, err
	}
	defer f.Close()
	return raftlog.ReadSnapshot(f)
}
