package bench

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestHistBucketsBoundError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := int64(rng.Uint64() >> (1 + rng.IntN(63)))
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("index(%d) = %d out of range", v, i)
		}
		u := histUpper(i)
		if u < v || float64(u-v) > float64(v)/64+1 {
			t.Fatalf("value %d in bucket %d with upper %d: error too large", v, i, u)
		}
		if i > 0 && histUpper(i-1) >= v {
			t.Fatalf("value %d also fits bucket %d (upper %d)", v, i-1, histUpper(i-1))
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	h := NewHist()
	for i := 1; i <= 100000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	h.Record(-5) // counts as zero
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}, {1, 100 * time.Millisecond}} {
		got := h.Quantile(tc.q)
		if got < tc.want || float64(got-tc.want) > float64(tc.want)/64 {
			t.Errorf("q%.3f = %v, want %v within 1/64 above", tc.q, got, tc.want)
		}
	}
	if h.Count() != 100001 || h.Max() != 100*time.Millisecond {
		t.Errorf("count %d max %v", h.Count(), h.Max())
	}
	if m := h.Mean(); m < 49*time.Millisecond || m > 51*time.Millisecond {
		t.Errorf("mean %v", m)
	}
	o := NewHist()
	o.Record(time.Second)
	h.Merge(o)
	if h.Max() != time.Second || h.Quantile(1) != time.Second || h.Count() != 100002 {
		t.Errorf("after merge: max %v q1 %v count %d", h.Max(), h.Quantile(1), h.Count())
	}
	h.Reset()
	if h.Count() != 0 || h.Quantile(0.5) != 0 {
		t.Errorf("after reset: count %d", h.Count())
	}
}

func TestSearchZeroLoss(t *testing.T) {
	far := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name                string
		limit, start, maxR  float64
		bisect, trials      int
		wantLo, wantHi      float64
		wantTrialsAtMost    int
		wantTrialsAtLeast   int
		deadlineAlreadyPast bool
	}{
		{name: "step up then bisect", limit: 123456, start: 10000, maxR: 1e7, bisect: 4, trials: 20,
			wantLo: 123456 * 0.9, wantHi: 123456, wantTrialsAtMost: 9, wantTrialsAtLeast: 9},
		{name: "step down", limit: 3000, start: 10000, maxR: 1e7, bisect: 3, trials: 20,
			wantLo: 2500, wantHi: 3000, wantTrialsAtMost: 6, wantTrialsAtLeast: 6},
		{name: "capped by max rate", limit: 1e9, start: 10000, maxR: 50000, bisect: 4, trials: 20,
			wantLo: 40000, wantHi: 40000, wantTrialsAtMost: 3, wantTrialsAtLeast: 3},
		{name: "trial budget", limit: 123456, start: 10000, maxR: 1e7, bisect: 4, trials: 3,
			wantLo: 40000, wantHi: 40000, wantTrialsAtMost: 3, wantTrialsAtLeast: 3},
		{name: "deadline", limit: 123456, start: 10000, maxR: 1e7, bisect: 4, trials: 20, deadlineAlreadyPast: true,
			wantLo: 10000, wantHi: 10000, wantTrialsAtMost: 1, wantTrialsAtLeast: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deadline := far
			if tc.deadlineAlreadyPast {
				deadline = time.Now()
			}
			try := func(r float64) (bool, error) { return r <= tc.limit, nil }
			got, n, err := searchZeroLoss(try, tc.start, 2, tc.maxR, tc.bisect, tc.trials, deadline)
			if err != nil || got < tc.wantLo || got > tc.wantHi || n > tc.wantTrialsAtMost || n < tc.wantTrialsAtLeast {
				t.Errorf("got %.0f after %d trials (err %v), want [%.0f, %.0f] after %d-%d",
					got, n, err, tc.wantLo, tc.wantHi, tc.wantTrialsAtLeast, tc.wantTrialsAtMost)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	if m := median(nil); m != 0 {
		t.Errorf("median(nil) = %v", m)
	}
}
