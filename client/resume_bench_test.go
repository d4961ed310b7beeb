package client

import (
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// BenchmarkResumeDelta measures one resume of 50,000 missed updates: a
// client of a 100,000-key in-process server is cut off by a TCP proxy, the
// updates are sequenced, the proxy is restored, and each op is the
// re-join's request → in sync (JoinStats.Took), reported as ms/resume and
// missed updates per second. With -cpuprofile it shows where a delta's
// time goes, server and client in one profile.
//
//	go test -run '^$' -bench ResumeDelta -benchtime 5x ./client/
func BenchmarkResumeDelta(b *testing.B) {
	const keys, missed = 100_000, 50_000
	srv := startServer(b, server.Config{})
	push := newRawPeer(b).pusher(srv.Port())
	fillServer(b, srv, push, keys)
	px := startProxy(b, srv.Port())
	c := dialWithin(b, Options{Endpoints: []string{px.endpoint()}, HeartbeatTimeout: 500 * time.Millisecond, JoinTimeout: 20 * time.Second}, 60*time.Second)
	var took time.Duration
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		joins := c.Stats().Joins
		px.cut()
		waitFor(b, 15*time.Second, "the client to notice the outage", func() bool { return !c.Synced() })
		to := srv.Stats().Sequence.Load() + missed
		writeMissed(b, push, missed, keys)
		waitFor(b, 30*time.Second, "the updates sequenced", func() bool { return srv.Stats().Sequence.Load() >= to })
		b.StartTimer()
		px.restore()
		waitFor(b, 30*time.Second, "the client resumed", func() bool {
			st := c.Stats()
			return st.Synced && st.Joins > joins && st.Seq >= to
		})
		lj := c.Stats().LastJoin
		if lj.Kind != joinDelta {
			b.Fatalf("re-join was %s (%s), want a delta", lj.Kind, lj.Reason)
		}
		took += lj.Took
	}
	b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/resume")
	b.ReportMetric(float64(missed)*float64(b.N)/took.Seconds(), "updates/s")
}
