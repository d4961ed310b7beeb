package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// rig is one server under test with the client-side context and the
// subscribers that follow it. Close stops everything it started.
type rig struct {
	target *Target
	zctx   *zmq.Context
	clk    clock
	subs   []*subscriber
	cancel context.CancelFunc // stops the subscribers
	ctx    context.Context
	// noUUID sends the trials' updates with an empty UUID frame instead of
	// 16 zero bytes: a cluster's leader applies each UUID once, so one
	// shared UUID would be one update.
	noUUID bool
}

// newRig launches impl and starts nsubs subscribers on prefixes (onMsg may
// be nil).
func newRig(ctx context.Context, l Launcher, impl string, nsubs int, prefixes []string,
	onMsg func(key, body []byte, seq int64, now time.Duration)) (*rig, error) {
	t, err := l.Launch(ctx, impl)
	if err != nil {
		return nil, err
	}
	zctx, err := newZctx(nsubs + 64)
	if err != nil {
		return nil, errors.Join(err, t.Stop())
	}
	subCtx, cancel := context.WithCancel(ctx)
	r := &rig{target: t, zctx: zctx, clk: newClock(), cancel: cancel, ctx: subCtx}
	for range nsubs {
		s, err := startSubscriber(subCtx, zctx, t.Port, r.clk, prefixes, onMsg)
		if err != nil {
			return nil, errors.Join(err, r.Close())
		}
		r.subs = append(r.subs, s)
	}
	return r, nil
}

// Close stops the subscribers, terminates the context and stops the server.
func (r *rig) Close() error {
	r.cancel()
	for _, s := range r.subs {
		<-s.done
	}
	return errors.Join(r.zctx.Term(), r.target.Stop())
}

// warmup publishes a probe every 50 ms until every subscriber has received
// something (its subscription has reached the PUB), or timeout passes.
func (r *rig) warmup(ctx context.Context, key string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ready := true
		for _, s := range r.subs {
			ready = ready && s.received.Load() > 0
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: subscribers not receiving after %v", r.target.Impl, timeout)
		}
		spec := pubSpec{Keys: [][]byte{[]byte(key)}, Body: minBody, N: 1}
		if _, err := publish(ctx, r.zctx, r.target.Port, spec, r.clk); err != nil {
			return fmt.Errorf("%s warmup: %w", r.target.Impl, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counts returns each subscriber's received total and the lost total.
func (r *rig) counts() ([]int64, int64) {
	rec := make([]int64, len(r.subs))
	var lost int64
	for i, s := range r.subs {
		rec[i] = s.received.Load()
		lost += s.lost.Load() + s.disorder.Load()
	}
	return rec, lost
}

// waitDelivered waits until every subscriber has received want more than
// before, or nothing has arrived for idle, or max passes. It returns the
// per-subscriber deltas and the lost delta.
func (r *rig) waitDelivered(before []int64, lostBefore, want int64, idle, maxWait time.Duration) ([]int64, int64) {
	deadline := time.Now().Add(maxWait)
	var lastSum int64 = -1
	lastChange := time.Now()
	for {
		rec, lost := r.counts()
		var sum int64
		all := true
		for i := range rec {
			rec[i] -= before[i]
			sum += rec[i]
			all = all && rec[i] >= want
		}
		if sum != lastSum {
			lastSum, lastChange = sum, time.Now()
		}
		if all || time.Since(lastChange) > idle || time.Now().After(deadline) {
			return rec, lost - lostBefore
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// takeHists merges and resets every subscriber's latency histogram.
func (r *rig) takeHists() *Hist {
	h := NewHist()
	for _, s := range r.subs {
		h.Merge(s.takeHist())
	}
	return h
}

// cpu samples the server process.
func (r *rig) proc() ProcSample {
	s, _ := ReadProc(r.target.PID)
	return s
}
