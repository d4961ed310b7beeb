package bench

import (
	"math"
	"math/bits"
	"time"
)

// Hist is a log-linear histogram of non-negative durations in nanoseconds,
// in the spirit of HdrHistogram: values below 128 ns are exact, and above
// that every power of two is split into 64 buckets, so any recorded value is
// reported within 1/64 (about 1.6%) of itself. It covers the whole int64
// range in 3,776 counters and never allocates after New. The zero value is
// not usable; a Hist is not safe for concurrent use.
type Hist struct {
	counts []uint64
	total  uint64
	max    int64
	sum    float64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // exact values below this
	histHalf    = histSub / 2      // buckets per power of two above it
	histBuckets = histSub + (64-histSubBits)*histHalf
)

// NewHist returns an empty histogram.
func NewHist() *Hist { return &Hist{counts: make([]uint64, histBuckets)} }

func histIndex(v int64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits
	return histSub + (shift-1)*histHalf + int(uint64(v)>>shift) - histHalf
}

// histUpper is the highest value that falls in bucket i.
func histUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	shift := (i-histSub)/histHalf + 1
	m := uint64((i-histSub)%histHalf + histHalf)
	u := (m+1)<<shift - 1
	if u > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(u)
}

// Record adds one value; negative values count as zero.
func (h *Hist) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[histIndex(v)]++
	h.total++
	h.sum += float64(v)
	h.max = max(h.max, v)
}

// Merge adds every value of o to h.
func (h *Hist) Merge(o *Hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Reset empties the histogram.
func (h *Hist) Reset() {
	clear(h.counts)
	h.total, h.max, h.sum = 0, 0, 0
}

// Count is how many values were recorded.
func (h *Hist) Count() uint64 { return h.total }

// Max is the largest value recorded (exact).
func (h *Hist) Max() time.Duration { return time.Duration(h.max) }

// Mean is the mean of the recorded values (exact).
func (h *Hist) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Quantile returns the value at quantile q in [0, 1]: the upper bound of the
// bucket holding the ceil(q·n)-th smallest value, capped at the exact
// maximum. It returns 0 for an empty histogram.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(histUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
