package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// FanoutParams are the knobs of fanout: Subs subscribers, spread over
// Groups goroutines that each own their share of the SUB sockets and poll
// them together, receive N updates sent at Rate.
type FanoutParams struct {
	Impls  []string
	Subs   int
	Groups int
	Rate   float64
	N      int
}

// FanoutResult is one server's fanout.
type FanoutResult struct {
	Impl     string  `json:"impl"`
	Subs     int     `json:"subs"`
	Complete int     `json:"complete"` // subscribers that got all N, no gap
	Lost     int64   `json:"lost"`     // deliveries missing
	N        int     `json:"n"`
	Rate     float64 `json:"rate"`
	P50      Dur     `json:"p50"`
	P99      Dur     `json:"p99"`
	P999     Dur     `json:"p999"`
	Max      Dur     `json:"max"`
	Connect  Dur     `json:"connect"` // until every subscriber received a probe
	CPU      Dur     `json:"server_cpu"`
}

// subGroup is one goroutine's share of the subscribers.
type subGroup struct {
	ready, timed atomic.Int64 // sockets that got anything; timed updates
	done         chan struct{}
	// Owned by the goroutine, read after done:
	count []int64
	gaps  []int64
	hist  *Hist
}

func (g *subGroup) run(ctx context.Context, socks []*zmq.Socket, clk clock) {
	defer close(g.done)
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	poller := zmq.NewPoller()
	for _, s := range socks {
		poller.Add(s, zmq.POLLIN)
	}
	g.count, g.gaps, g.hist = make([]int64, len(socks)), make([]int64, len(socks)), NewHist()
	last := make([]int64, len(socks))
	rxs := make([]*transport.Receiver, len(socks))
	for i, s := range socks {
		rxs[i] = transport.NewReceiver(s)
	}
	for ctx.Err() == nil {
		polled, err := poller.PollAll(20 * time.Millisecond)
		if err != nil {
			return
		}
		for i, p := range polled {
			if p.Events&zmq.POLLIN == 0 {
				continue
			}
			for range 1024 {
				frames, _, err := rxs[i].Recv(zmq.DONTWAIT)
				if err != nil || len(frames) != kvmsg.NumFrames || len(frames[kvmsg.FrameSeq]) != kvmsg.SeqLen {
					break
				}
				seq := int64(binary.BigEndian.Uint64(frames[kvmsg.FrameSeq]))
				if seq == 0 {
					continue // HUGZ
				}
				if last[i] == 0 {
					g.ready.Add(1)
				} else if seq != last[i]+1 {
					g.gaps[i] += max(seq-last[i]-1, 1)
				}
				last[i] = seq
				if ts, ok := stampOf(frames[kvmsg.FrameBody]); ok {
					g.hist.Record(clk.now() - time.Duration(ts))
					g.count[i]++
					g.timed.Add(1)
				}
			}
		}
	}
}

func runFanout(ctx context.Context, l Launcher, p FanoutParams, prog *Progress) ([]FanoutResult, error) {
	var out []FanoutResult
	for _, impl := range p.Impls {
		r, err := fanoutOne(ctx, l, p, impl, prog)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func fanoutOne(ctx context.Context, l Launcher, p FanoutParams, impl string, prog *Progress) (res FanoutResult, err error) {
	res = FanoutResult{Impl: impl, Subs: p.Subs, N: p.N, Rate: p.Rate}
	prog.Step("%s: connecting %d subscribers", impl, p.Subs)
	t, err := l.Launch(ctx, impl)
	if err != nil {
		return res, err
	}
	zctx, err := newZctx(p.Subs + 64)
	if err != nil {
		return res, errors.Join(err, t.Stop())
	}
	gctx, cancel := context.WithCancel(ctx)
	groups := make([]*subGroup, p.Groups)
	defer func() {
		cancel()
		for _, g := range groups {
			if g != nil {
				<-g.done
			}
		}
		err = errors.Join(err, zctx.Term(), t.Stop())
	}()
	clk := newClock()
	start := time.Now()
	for gi := range groups {
		var socks []*zmq.Socket
		for i := gi; i < p.Subs; i += p.Groups {
			s, err := transport.Connect(zctx, zmq.SUB, endpoint(t.Port+1), transport.Options{Subscribe: []string{""}})
			if err != nil {
				for _, s := range socks {
					s.Close()
				}
				return res, fmt.Errorf("fanout subscriber %d: %w", i, err)
			}
			socks = append(socks, s)
		}
		groups[gi] = &subGroup{done: make(chan struct{})}
		go groups[gi].run(gctx, socks, clk)
	}
	ready := func() int64 {
		var n int64
		for _, g := range groups {
			n += g.ready.Load()
		}
		return n
	}
	for deadline := time.Now().Add(60 * time.Second); ready() < int64(p.Subs); {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%s fanout: %d of %d subscribers receiving after 60s", impl, ready(), p.Subs)
		}
		spec := pubSpec{Keys: [][]byte{[]byte("/probe")}, Body: 8, N: 1}
		if _, err := publish(ctx, zctx, t.Port, spec, clk); err != nil {
			return res, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.Connect = Dur(time.Since(start))
	time.Sleep(200 * time.Millisecond) // let the last probes drain
	prog.Step("%s: %d updates at %s/s to %d subscribers", impl, p.N, si(p.Rate), p.Subs)
	c0, _ := ReadProc(t.PID)
	spec := pubSpec{Keys: makeKeys("/f/", 100), Body: minBody, N: p.N, Rate: p.Rate, Timed: true}
	if _, err := publish(ctx, zctx, t.Port, spec, clk); err != nil {
		return res, err
	}
	want := int64(p.N) * int64(p.Subs)
	var got, prev int64
	for deadline, lastChange := time.Now().Add(30*time.Second), time.Now(); ; time.Sleep(10 * time.Millisecond) {
		got = 0
		for _, g := range groups {
			got += g.timed.Load()
		}
		if got != prev {
			prev, lastChange = got, time.Now()
		}
		if got >= want || time.Since(lastChange) > time.Second || time.Now().After(deadline) {
			break
		}
	}
	c1, _ := ReadProc(t.PID)
	res.CPU = Dur(c1.CPU - c0.CPU)
	cancel()
	h := NewHist()
	for _, g := range groups {
		<-g.done
		h.Merge(g.hist)
		for i, c := range g.count {
			if c == int64(p.N) && g.gaps[i] == 0 {
				res.Complete++
			}
			res.Lost += max(int64(p.N)-c, 0)
		}
	}
	res.P50, res.P99, res.P999, res.Max = Dur(h.Quantile(0.5)), Dur(h.Quantile(0.99)), Dur(h.Quantile(0.999)), Dur(h.Max())
	return res, nil
}
