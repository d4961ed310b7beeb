package durability

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
)

// writer streams distinct keys as fast as the server takes them, from its
// own goroutine, until stop (or max updates).
func writer(s *sockets, prefix string, max int) (stop func() int) {
	push := s.connect(zmq.PUSH, 2)
	push.SetSndtimeo(50 * time.Millisecond)
	quit, done := make(chan struct{}), make(chan int, 1)
	go func() {
		sent := 0
		for sent < max {
			select {
			case <-quit:
				done <- sent
				return
			default:
			}
			m := kvmsg.Msg{Key: fmt.Appendf(nil, "%s%07d", prefix, sent), Body: fmt.Appendf(nil, "%s=%d", prefix, sent)}
			if _, err := push.SendMessage(m.Frames()); err == nil {
				sent++
			}
		}
		<-quit
		done <- sent
	}()
	return func() int { close(quit); return <-done }
}

// TestKill9LosesNothingShown (issue 12, 2): a writer streams at full speed
// while a subscriber records every KVPUB; kill -9; restart. Every update
// the subscriber received is in the restarted map at the same sequence,
// and no sequence is ever used for two different updates. Five rounds on
// one data directory.
func TestKill9LosesNothingShown(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), testkit.FreePorts(t)
	s := newSockets(t, port)
	shown := map[string]pub{}   // key -> the update a subscriber received
	bySeq := map[int64]string{} // sequence -> key=body, from everything seen
	note := func(seq int64, key, body, where string) {
		kb := key + "=" + body
		if prev, ok := bySeq[seq]; ok && prev != kb {
			t.Fatalf("sequence %d used twice: %q and %q (%s)", seq, prev, kb, where)
		}
		bySeq[seq] = kb
	}
	p := start(t, dir, port)
	for round := range 5 {
		rec := record(s)
		waitFor(t, 10*time.Second, "subscribed", func() bool { _, h := rec.snapshot(); return len(h) > 0 })
		stop := writer(s, fmt.Sprintf("/c/%d/", round), 2_000_000)
		waitFor(t, 30*time.Second, "updates published", func() bool { u, _ := rec.snapshot(); return len(u) >= 3000 })
		p.stop(t, syscall.SIGKILL)
		sent := stop()
		rec.finish()
		pubs, _ := rec.snapshot()
		for _, u := range pubs {
			shown[u.Key] = u
			note(u.Seq, u.Key, u.Body, "published")
		}
		p = start(t, dir, port)
		got, seq, _ := snapshotOf(t, s, "")
		for k, u := range shown {
			g, ok := got[k]
			if !ok || g.Seq != u.Seq || g.Body != u.Body {
				t.Fatalf("round %d: %q was published at sequence %d (%q); after kill -9 the map has %+v (present %v)", round, k, u.Seq, u.Body, g, ok)
			}
		}
		for k, g := range got {
			note(g.Seq, k, g.Body, "restarted map")
		}
		t.Logf("round %d: %d sent, %d published before kill -9, map %d keys at sequence %d", round, sent, len(pubs), len(got), seq)
	}
	p.term(t)
}
