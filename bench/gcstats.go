package bench

import (
	"fmt"
	"runtime/metrics"
)

// GCSample is a process's collector figures since it started, from
// runtime/metrics: the difference of two samples is what the GC did in
// between.
type GCSample struct {
	GCCPU    float64 // seconds of CPU the GC used (/cpu/classes/gc/total)
	Cycles   uint64  // collections completed
	HeapLive uint64  // bytes of heap marked live by the last collection
	HeapGoal uint64  // heap size at which the next collection ends
}

// The child protocol: the parent writes gcQuery as a line on the child's
// stdin; the child answers with gcReply followed by GCSample.format().
const (
	gcQuery = "gc?"
	gcReply = "GC "
)

var gcMetrics = []string{
	"/cpu/classes/gc/total:cpu-seconds",
	"/gc/cycles/total:gc-cycles",
	"/gc/heap/live:bytes",
	"/gc/heap/goal:bytes",
}

// ReadGC samples this process's collector.
func ReadGC() GCSample {
	s := make([]metrics.Sample, len(gcMetrics))
	for i, n := range gcMetrics {
		s[i].Name = n
	}
	metrics.Read(s)
	var g GCSample
	if s[0].Value.Kind() == metrics.KindFloat64 {
		g.GCCPU = s[0].Value.Float64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		g.Cycles = s[1].Value.Uint64()
	}
	if s[2].Value.Kind() == metrics.KindUint64 {
		g.HeapLive = s[2].Value.Uint64()
	}
	if s[3].Value.Kind() == metrics.KindUint64 {
		g.HeapGoal = s[3].Value.Uint64()
	}
	return g
}

func (g GCSample) format() string {
	return fmt.Sprintf("%g %d %d %d", g.GCCPU, g.Cycles, g.HeapLive, g.HeapGoal)
}

func parseGCSample(line string) (GCSample, error) {
	var g GCSample
	if _, err := fmt.Sscanf(line, "%g %d %d %d", &g.GCCPU, &g.Cycles, &g.HeapLive, &g.HeapGoal); err != nil {
		return g, fmt.Errorf("parse gc figures %q: %w", line, err)
	}
	return g, nil
}
