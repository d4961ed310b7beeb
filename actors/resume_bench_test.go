package actors

import (
	"fmt"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/window"
)

// The choice of the resume window (README "Protocol additions", resume):
// what the snapshot responder spends producing the reply to a client that
// missed the last 1,000 updates of a 100,000-key map, as a delta from the
// window and as the full snapshot it would get otherwise. Run with
//
//	go test ./actors -run '^$' -bench BenchmarkResumeReply -benchmem
func BenchmarkResumeReply(b *testing.B) {
	const keys, missed = 100_000, 1_000
	history := "0123456789abcdef0123456789abcdef"
	m := kvmap.New()
	w := window.New(64<<20, 0)
	uuid := []byte("0123456789abcdef")
	body := make([]byte, 100)
	seq := int64(0)
	// The map is written twice over: the window holds the last 200,000
	// updates, more than its share of a 64 MiB bound would drop.
	for round := range 2 {
		for i := range keys {
			seq++
			msg := kvmsg.Msg{Key: fmt.Appendf(nil, "/k/%06d", (i*7919)%keys), Seq: seq, UUID: uuid, Body: append(body[:0:0], byte(round))}
			msg.Body = append(msg.Body, body[1:]...)
			m.Apply(msg)
			if err := w.Append(msg, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	}
	view := &View{Seq: seq, Map: m.View(), History: history, Window: w.View()}
	a := NewSnapshot(SnapshotConfig{Stats: &stats.Server{}, Resume: true})
	run := func(b *testing.B, resume bool) {
		var msgs, bytes int64
		for range b.N {
			s := &stream{subtree: nil}
			s.seq, s.history = view.Seq, view.History
			if resume {
				s.resume = resumeAsk{asked: true, history: history, since: seq - missed}
			}
			if !a.startDelta(s, view) {
				s.cur = view.Map.Cursor(s.subtree)
			}
			msgs, bytes = 0, 0
			for !s.finished {
				ch := a.produce(s)
				msgs += int64(ch.msgs.Len())
				bytes += int64(len(ch.msgs.Data))
				s.spare = append(s.spare, ch)
			}
			a.release(s)
		}
		b.ReportMetric(float64(msgs), "msgs/reply")
		b.ReportMetric(float64(bytes), "bytes/reply")
	}
	b.Run("delta", func(b *testing.B) { run(b, true) })
	b.Run("full", func(b *testing.B) { run(b, false) })
}
