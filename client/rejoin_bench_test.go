package client

import (
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// BenchmarkRejoin100k measures one re-join (a fresh snapshot of 100,000
// keys, applied beside the old map and swapped in, plus the difference
// events) against an in-process server on loopback, while a reader keeps
// calling Get. It reports the re-join time per op and the slowest Get seen
// during the re-joins; "alone" runs without that reader.
//
//	go test -run '^$' -bench Rejoin100k -benchtime 10x ./client/
func BenchmarkRejoin100k(b *testing.B) {
	b.Run("alone", func(b *testing.B) { benchRejoin(b, false) })
	b.Run("with-reader", func(b *testing.B) { benchRejoin(b, true) })
}

func benchRejoin(b *testing.B, reader bool) {
	const keys = 100_000
	srv := startServer(b, server.Config{})
	push := newRawPeer(b).pusher(srv.Port())
	for i := range keys {
		set(b, push, fmt.Sprintf("/bench/%06d", i), "value-of-twenty-b")
	}
	waitFor(b, 60*time.Second, "100k keys stored", func() bool { return srv.Stats().Sequence.Load() == keys })
	start := time.Now()
	c := dial(b, Options{Endpoints: []string{srv.endpoint()}, HeartbeatTimeout: -1, JoinTimeout: 10 * time.Second})
	b.Logf("first join of %d keys: %v", c.Snapshot().Len(), time.Since(start).Round(time.Millisecond))
	events := c.Watch(b.Context())

	var stop atomic.Bool
	var worstGet atomic.Int64
	var gets atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; reader && !stop.Load(); i++ {
			t0 := time.Now()
			if _, ok := c.Get(fmt.Sprintf("/bench/%06d", i%keys)); !ok {
				panic("key missing during re-join")
			}
			if d := int64(time.Since(t0)); d > worstGet.Load() {
				worstGet.Store(d)
			}
			gets.Add(1)
		}
	}()
	var took []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := c.Resync(); err != nil {
			b.Fatal(err)
		}
		for ev := range events {
			if ev.Type == EventResyncDone {
				if ev.Keys != keys {
					b.Fatalf("re-joined with %d keys", ev.Keys)
				}
				break
			}
		}
		took = append(took, time.Since(t0))
	}
	b.StopTimer()
	stop.Store(true)
	<-done
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(worstGet.Load())/1e6, "worst-get-ms")
	b.Logf("re-join of %d keys: median %v, min %v, max %v over %d; %d Gets served meanwhile, slowest %v",
		keys, took[len(took)/2].Round(time.Millisecond), took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		len(took), gets.Load(), time.Duration(worstGet.Load()).Round(time.Microsecond))
}
