package window

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

// BenchmarkAppend measures what the window costs per update: the time to
// append one and the heap it holds (a 16-byte uuid, a 10-byte key and a
// 100-byte value, as the bench suite's updates). Run with
//
//	go test ./window -run '^$' -bench BenchmarkAppend -benchmem
func BenchmarkAppend(b *testing.B) {
	const n = 200_000
	msgs := make([]kvmsg.Msg, 1000)
	for i := range msgs {
		msgs[i] = kvmsg.Msg{Key: fmt.Appendf(nil, "/k/%07d", i), UUID: []byte("0123456789abcdef"), Body: make([]byte, 100)}
	}
	var heap, accounted float64
	var spent time.Duration
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		w := New(64<<20, 0)
		now := time.Now()
		start := time.Now()
		for i := range n {
			m := msgs[i%len(msgs)]
			m.Seq = int64(i + 1)
			if err := w.Append(m, now); err != nil {
				b.Fatal(err)
			}
		}
		spent += time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = float64(after.HeapAlloc-before.HeapAlloc) / n
		accounted = float64(w.Bytes()) / n
		runtime.KeepAlive(w)
	}
	b.ReportMetric(heap, "heap-B/update")
	b.ReportMetric(accounted, "window-B/update")
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N*n), "ns/update")
}
