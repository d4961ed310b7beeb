package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
)

// UpdatesCase is one shape of the updates workload: P publishers (PUSH),
// S subscribers (SUB to everything), B-byte bodies, K distinct keys.
type UpdatesCase struct {
	Pubs, Subs, Body, Keys int
}

func (c UpdatesCase) String() string {
	return fmt.Sprintf("%d→%d %s", c.Pubs, c.Subs, sizeName(c.Body))
}

// UpdatesParams are the knobs of the updates case.
type UpdatesParams struct {
	Cases []UpdatesCase
	Impls []string // baseline first: its zero-loss maximum sets the latency rates
	Runs  int      // zero-loss searches per server, reported as their median
	// Trial is how long one offered-rate trial sends; Latency how long a
	// latency run sends; Unbounded how long the unbounded run sends.
	Trial, Latency, Unbounded time.Duration
	StartRate                 float64   // first rate tried by the first search
	MaxRate                   float64   // the search does not go beyond this
	Fractions                 []float64 // of the baseline's zero-loss rate, for latency
	Rates                     []float64 // absolute rates for latency, after the fractions
	Budget                    time.Duration
	Debug                     io.Writer // if set, one line per trial
}

// LatencyPoint is update latency (PUSH send to SUB receive) at one offered
// rate.
type LatencyPoint struct {
	Fraction float64 `json:"fraction"` // of the baseline's zero-loss rate
	Rate     float64 `json:"rate"`     // offered, updates/s (all publishers)
	P50      Dur     `json:"p50"`
	P99      Dur     `json:"p99"`
	P999     Dur     `json:"p999"`
	Max      Dur     `json:"max"`
	Lost     int64   `json:"lost"` // updates any subscriber missed
}

// UpdatesResult is one server on one UpdatesCase.
type UpdatesResult struct {
	Case           UpdatesCase    `json:"case"`
	Impl           string         `json:"impl"`
	ZeroLoss       []float64      `json:"zero_loss_runs"` // updates/s, each run
	ZeroLossMedian float64        `json:"zero_loss"`
	Trials         int            `json:"trials"`
	UnboundedSent  float64        `json:"unbounded_sent_per_s"`      // taken by the server
	UnboundedDeliv float64        `json:"unbounded_delivered_per_s"` // per subscriber
	UnboundedLoss  float64        `json:"unbounded_loss"`            // share lost
	Latency        []LatencyPoint `json:"latency"`
	CPU            Dur            `json:"server_cpu"`
	PeakRSS        int64          `json:"server_peak_rss"`
}

// trialOutcome is one offered-rate trial.
type trialOutcome struct {
	offered, achieved float64
	sent              int
	minRecv, sumRecv  int64
	lost              int64
	hist              *Hist
	elapsed           time.Duration
}

func (o trialOutcome) ok() bool {
	return o.sent > 0 && o.minRecv == int64(o.sent) && o.lost == 0 && o.achieved >= 0.95*o.offered
}

// trial sends rate·d updates (rate 0: as fast as possible for d) from the
// case's publishers and waits until every subscriber has them all or stops
// receiving.
func (r *rig) trial(ctx context.Context, c UpdatesCase, keys [][]byte, rate float64, d time.Duration) (trialOutcome, error) {
	before, lostBefore := r.counts()
	r.takeHists()
	n := int(rate * d.Seconds())
	if rate == 0 {
		n = 1 << 30
	}
	n = max(n, c.Pubs)
	specs := make([]pubSpec, c.Pubs)
	for i := range specs {
		specs[i] = pubSpec{Keys: rotate(keys, i*len(keys)/c.Pubs), Body: c.Body, N: n / c.Pubs, Rate: rate / float64(c.Pubs), Timed: true}
		if r.noUUID {
			specs[i].UUID = []byte{}
		}
		if rate == 0 {
			specs[i].For = d
		}
	}
	sent, elapsed, err := publishAll(ctx, r.zctx, r.target.Port, specs, r.clk)
	if err != nil {
		return trialOutcome{}, fmt.Errorf("%s %v at %.0f/s: %w", r.target.Impl, c, rate, err)
	}
	rec, lost := r.waitDelivered(before, lostBefore, int64(sent), 300*time.Millisecond, 10*time.Second)
	o := trialOutcome{offered: rate, sent: sent, lost: lost, hist: r.takeHists(), elapsed: elapsed, minRecv: rec[0]}
	for _, v := range rec {
		o.minRecv = min(o.minRecv, v)
		o.sumRecv += v
	}
	if elapsed > 0 {
		o.achieved = float64(sent) / elapsed.Seconds()
	}
	return o, nil
}

// searchZeroLoss finds the highest rate for which try succeeds: it steps
// from start by factor (up while it succeeds, down while it fails), then
// bisects the bracket bisect times. It stops early once trials have been
// run or the deadline passes, returning the best rate seen so far.
func searchZeroLoss(try func(rate float64) (bool, error), start, factor, maxRate float64, bisect, trials int, deadline time.Time) (best float64, n int, err error) {
	run := func(rate float64) (bool, error) { n++; return try(rate) }
	out := func() bool { return n >= trials || time.Now().After(deadline) }
	lo, hi := 0.0, 0.0
	ok, err := run(start)
	if err != nil {
		return 0, n, err
	}
	if ok {
		lo = start
		for r := start * factor; ; r *= factor {
			if r > maxRate {
				return lo, n, nil
			}
			if out() {
				return lo, n, nil
			}
			ok, err := run(r)
			if err != nil {
				return lo, n, err
			}
			if !ok {
				hi = r
				break
			}
			lo = r
		}
	} else {
		hi = start
		for r := start / factor; ; r /= factor {
			if out() || r < 1 {
				return lo, n, nil
			}
			ok, err := run(r)
			if err != nil {
				return lo, n, err
			}
			if ok {
				lo = r
				break
			}
			hi = r
		}
	}
	for range bisect {
		if out() {
			break
		}
		mid := (lo + hi) / 2
		ok, err := run(mid)
		if err != nil {
			return lo, n, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, n, nil
}

// runUpdates runs every case on every server.
func runUpdates(ctx context.Context, l Launcher, p UpdatesParams, prog *Progress) ([]UpdatesResult, error) {
	var out []UpdatesResult
	deadline := time.Now().Add(p.Budget)
	// Each case gets an equal share of what is left of the budget.
	for ci, c := range p.Cases {
		keys := makeKeys("/u/", c.Keys)
		var baseRate float64
		caseDeadline := time.Now().Add(time.Until(deadline) / time.Duration(len(p.Cases)-ci))
		for ii, impl := range p.Impls {
			implDeadline := time.Now().Add(time.Until(caseDeadline) / time.Duration(len(p.Impls)-ii))
			res, err := updatesOne(ctx, l, p, c, impl, keys, baseRate, implDeadline, prog)
			if err != nil {
				return out, err
			}
			if impl == ImplBaseline {
				baseRate = res.ZeroLossMedian
			}
			out = append(out, res)
		}
	}
	return out, nil
}

func updatesOne(ctx context.Context, l Launcher, p UpdatesParams, c UpdatesCase, impl string, keys [][]byte,
	baseRate float64, deadline time.Time, prog *Progress) (res UpdatesResult, err error) {
	res = UpdatesResult{Case: c, Impl: impl}
	prog.Step("%v %s: starting", c, impl)
	r, err := newRig(ctx, l, impl, c.Subs, []string{""}, nil)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, r.Close()) }()
	if err := r.warmup(ctx, "/probe", 10*time.Second); err != nil {
		return res, err
	}
	cpu0 := r.proc()
	try := func(rate float64) (bool, error) {
		prog.Step("%v %s: zero-loss trial at %s/s", c, impl, si(rate))
		o, err := r.trial(ctx, c, keys, rate, p.Trial)
		if p.Debug != nil {
			fmt.Fprintf(p.Debug, "trial %v %s offered %.0f achieved %.0f sent %d minRecv %d lost %d ok %v\n", c, impl, rate, o.achieved, o.sent, o.minRecv, o.lost, o.ok())
		}
		return o.ok(), err
	}
	// Latency and unbounded runs are kept out of the search's time share.
	searchEnd := deadline.Add(-time.Duration(len(p.Fractions))*(p.Latency+300*time.Millisecond) - p.Unbounded - time.Second)
	start, factor, bisect := p.StartRate, 2.0, 4
	for run := range p.Runs {
		if run > 0 {
			start, factor, bisect = res.ZeroLoss[run-1], 1.25, 2
			if start == 0 {
				start = p.StartRate
			}
		}
		runEnd := time.Now().Add(time.Until(searchEnd) / time.Duration(p.Runs-run))
		best, n, err := searchZeroLoss(try, start, factor, p.MaxRate, bisect, 14, runEnd)
		res.Trials += n
		if err != nil {
			return res, err
		}
		res.ZeroLoss = append(res.ZeroLoss, best)
	}
	res.ZeroLossMedian = median(res.ZeroLoss)

	prog.Step("%v %s: unbounded rate", c, impl)
	o, err := r.trial(ctx, c, keys, 0, p.Unbounded)
	if err != nil {
		return res, err
	}
	res.UnboundedSent = o.achieved
	if o.elapsed > 0 && o.sent > 0 {
		res.UnboundedDeliv = float64(o.minRecv) / o.elapsed.Seconds()
		res.UnboundedLoss = 1 - float64(o.minRecv)/float64(o.sent)
	}

	ref := baseRate
	if ref == 0 {
		ref = res.ZeroLossMedian
	}
	rates := make([]float64, 0, len(p.Fractions)+len(p.Rates))
	for _, f := range p.Fractions {
		if ref > 0 {
			rates = append(rates, f*ref)
		}
	}
	rates = append(rates, p.Rates...)
	for _, rate := range rates {
		f := 0.0
		if ref > 0 {
			f = rate / ref
		}
		prog.Step("%v %s: latency at %s/s", c, impl, si(rate))
		o, err := r.trial(ctx, c, keys, rate, p.Latency)
		if err != nil {
			return res, err
		}
		res.Latency = append(res.Latency, LatencyPoint{
			Fraction: f, Rate: rate, P50: Dur(o.hist.Quantile(0.5)), P99: Dur(o.hist.Quantile(0.99)),
			P999: Dur(o.hist.Quantile(0.999)), Max: Dur(o.hist.Max()), Lost: int64(o.sent)*int64(c.Subs) - o.sumRecv,
		})
	}
	cpu1 := r.proc()
	res.CPU, res.PeakRSS = Dur(cpu1.CPU-cpu0.CPU), cpu1.HWM
	return res, nil
}

// rotate returns keys starting at index i (a copy of the slice header order).
func rotate(keys [][]byte, i int) [][]byte {
	i %= len(keys)
	return append(append([][]byte{}, keys[i:]...), keys[:i]...)
}

// makeKeys returns n keys prefix + zero-padded index.
func makeKeys(prefix string, n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "%s%07d", prefix, i)
	}
	return keys
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64{}, v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(v []time.Duration) time.Duration {
	f := make([]float64, len(v))
	for i, d := range v {
		f[i] = float64(d)
	}
	return time.Duration(median(f))
}
