package durability

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
)

// written loads n distinct keys /d/NNNNN in groups (many log entries),
// each group published before the next, and returns them by sequence.
func written(t *testing.T, s *sockets, n, group int) map[int64]string {
	t.Helper()
	rec := record(s)
	defer rec.finish()
	waitFor(t, 10*time.Second, "subscribed", func() bool { _, h := rec.snapshot(); return len(h) > 0 })
	push := s.connect(zmq.PUSH, 2)
	for i := 0; i < n; i += group {
		for j := i; j < min(i+group, n); j++ {
			set(t, push, fmt.Sprintf("/d/%05d", j), fmt.Sprint(j), 0)
		}
		waitFor(t, 30*time.Second, "the group published", func() bool { u, _ := rec.snapshot(); return len(u) >= min(i+group, n) })
	}
	pubs, _ := rec.snapshot()
	bySeq := map[int64]string{}
	for _, u := range pubs {
		bySeq[u.Seq] = u.Key
	}
	if len(bySeq) != n {
		t.Fatalf("%d distinct sequences published, want %d", len(bySeq), n)
	}
	return bySeq
}

// walSegment returns the log's one segment file and the end of its data
// (segments are preallocated with zeros).
func walSegment(t *testing.T, dir string) (string, int) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments: %v, want one", segs)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	end := len(bytes.TrimRight(data, "\x00"))
	return segs[0], end
}

// damage overwrites the bytes [at, at+n) of path with pattern.
func damage(t *testing.T, path string, at, n int, pattern byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{pattern}, n), int64(at)); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedLogTail (issue 12, 4): after a kill -9, the tail of the log file is torn
// (zeroed) or overwritten with garbage, and the server starts again. It
// either recovers exactly the updates before the damage (the map is the
// state at its sequence: every update up to it, nothing after) or refuses
// to start with a message naming the file. Never a silent loss before the
// damage, never a silent empty start.
func TestDamagedLogTail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		from    int // bytes before the end of the data
		n       int
		pattern byte
		// graceful: SIGTERM, whose final snapshot covers the damaged
		// entries (the log is then behind the snapshot).
		graceful bool
	}{
		{"torn tail", 200, 200, 0x00, false},
		{"garbage in the tail", 300, 40, 0xa5, false},
		{"garbage mid-log", -1, 40, 0x5a, false},
		{"torn tail behind the final snapshot", 200, 200, 0x00, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 2000
			dir, port := t.TempDir(), testkit.FreePorts(t)
			s := newSockets(t, port)
			p := start(t, dir, port)
			bySeq := written(t, s, n, 100)
			// kill -9: a graceful stop snapshots the final state, so the
			// damaged log tail is then behind the snapshot.
			if tc.graceful {
				p.term(t)
			} else {
				p.stop(t, syscall.SIGKILL)
			}
			seg, end := walSegment(t, dir)
			at := end - tc.from
			if tc.from < 0 {
				at = end / 2
			}
			damage(t, seg, at, tc.n, tc.pattern)

			p = launch(t, dir, port)
			select {
			case <-p.ready:
			case <-p.exited:
				if p.state.Success() || !strings.Contains(p.logText(), seg) {
					t.Fatalf("clonesrv exited %v without naming %s:\n%s", p.state, seg, p.logText())
				}
				t.Logf("refused to start, naming the file: %s", lastLine(p.logText()))
				return
			case <-time.After(60 * time.Second):
				t.Fatalf("clonesrv neither serving nor exited in 60s:\n%s", p.logText())
			}
			got, seq, _ := snapshotOf(t, s, "")
			if seq < 1 || seq > n || len(got) != int(seq) {
				t.Fatalf("recovered %d keys at sequence %d, want a prefix of the %d updates", len(got), seq, n)
			}
			for i := int64(1); i <= seq; i++ {
				if g, ok := got[bySeq[i]]; !ok || g.Seq != i {
					t.Fatalf("recovered sequence %d but update %d (%q) is %+v (present %v)", seq, i, bySeq[i], g, ok)
				}
			}
			// The recovered log takes new updates after what it kept.
			set(t, s.connect(zmq.PUSH, 2), "/after", "damage", 0)
			waitFor(t, 30*time.Second, "an update after the recovery", func() bool {
				m, after, _ := snapshotOf(t, s, "/after")
				return after == seq+1 && m["/after"].Seq == seq+1
			})
			t.Logf("recovered the first %d of %d updates (damage at byte %d of %d)", seq, n, at, end)
			p.term(t)
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
