package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// JoinParams are the knobs of join-under-load: Keys preloaded, then Pubs
// publishers update them at Rate for Dur while Joiners clients join one
// after another, each doing what a Clone client does (subscribe, snapshot,
// apply later updates by sequence).
type JoinParams struct {
	Impls   []string
	Keys    int
	Pubs    int
	Rate    float64
	Dur     time.Duration
	Joiners int
}

// JoinLoadResult says whether each joiner ended with the server's map.
type JoinLoadResult struct {
	Impl      string `json:"impl"`
	Joiners   int    `json:"joiners"`
	Equal     int    `json:"equal"`      // joiners whose map equals the final snapshot
	Complete  int    `json:"complete"`   // joiners whose snapshot ended with KTHXBAI
	Gaps      int64  `json:"gaps"`       // sequences joiners missed after their snapshot
	SnapLost  int    `json:"snap_lost"`  // KVSYNCs missing from their snapshots
	FinalKeys int    `json:"final_keys"` // keys in the final snapshot
	Updates   int    `json:"updates"`    // sent while joining
}

// cloneJoiner is one joining client; its goroutine owns both sockets.
type cloneJoiner struct {
	m        map[string]string
	complete bool
	syncs    int
	gaps     int64
	last     int64
}

type pubMsg struct {
	key, body string
	seq       int64
}

// join subscribes to everything, waits for the subscription to settle,
// fetches the snapshot while buffering updates, then applies updates in
// sequence until it has seen finalSeq (sent on final) or ctx ends.
func (j *cloneJoiner) join(ctx context.Context, zctx *zmq.Context, port int, idle time.Duration, final <-chan int64) error {
	sub, err := transport.Connect(zctx, zmq.SUB, endpoint(port+1), transport.Options{RcvHWM: 100000, Subscribe: []string{""}})
	if err != nil {
		return err
	}
	defer sub.Close()
	dealer, err := transport.Connect(zctx, zmq.DEALER, endpoint(port), transport.Options{})
	if err != nil {
		return err
	}
	defer dealer.Close()
	time.Sleep(200 * time.Millisecond) // the subscription reaches the PUB first
	if err := transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), nil}, 0); err != nil {
		return fmt.Errorf("joiner ICANHAZ?: %w", err)
	}
	j.m = map[string]string{}
	var pending []pubMsg
	poller := zmq.NewPoller()
	poller.Add(sub, zmq.POLLIN)
	poller.Add(dealer, zmq.POLLIN)
	frames := make([][]byte, 0, transport.MaxFrames)
	snapDone := false
	lastRecv := time.Now()
	want := int64(-1)
	for ctx.Err() == nil {
		select {
		case w := <-final:
			want = w
		default:
		}
		// Done once caught up with the final sequence, or (a joiner that
		// lost its KTHXBAI never catches up) once nothing has come for idle.
		if snapDone && want >= 0 && (j.last >= want || time.Since(lastRecv) > idle) {
			return nil
		}
		if !snapDone && time.Since(lastRecv) > idle {
			snapDone = true // the server dropped the end of the snapshot
		}
		polled, err := poller.PollAll(20 * time.Millisecond)
		if err != nil {
			return fmt.Errorf("joiner poll: %w", err)
		}
		if polled[1].Events&zmq.POLLIN != 0 {
			for range 4096 {
				frames, _, err = transport.RecvMessage(dealer, zmq.DONTWAIT, frames)
				if err != nil || len(frames) != kvmsg.NumFrames {
					break
				}
				lastRecv = time.Now()
				if string(frames[kvmsg.FrameKey]) == kvmsg.KeySnapshotEnd {
					snapDone, j.complete = true, true
					j.last = int64(binary.BigEndian.Uint64(frames[kvmsg.FrameSeq]))
					for _, u := range pending {
						j.apply(u)
					}
					pending = nil
					break
				}
				j.syncs++
				j.m[string(frames[kvmsg.FrameKey])] = string(frames[kvmsg.FrameBody])
			}
		}
		if polled[0].Events&zmq.POLLIN != 0 {
			for range 4096 {
				frames, _, err = transport.RecvMessage(sub, zmq.DONTWAIT, frames)
				if err != nil || len(frames) != kvmsg.NumFrames || len(frames[kvmsg.FrameSeq]) != kvmsg.SeqLen {
					break
				}
				lastRecv = time.Now()
				u := pubMsg{string(frames[kvmsg.FrameKey]), string(frames[kvmsg.FrameBody]), int64(binary.BigEndian.Uint64(frames[kvmsg.FrameSeq]))}
				if snapDone {
					j.apply(u)
				} else {
					pending = append(pending, u)
				}
			}
		}
	}
	return nil
}

func (j *cloneJoiner) apply(u pubMsg) {
	if u.seq <= j.last || u.key == kvmsg.KeyHeartbeat {
		return
	}
	if u.seq > j.last+1 {
		j.gaps += u.seq - j.last - 1
	}
	j.last = u.seq
	if u.body == "" {
		delete(j.m, u.key)
	} else {
		j.m[u.key] = u.body
	}
}

func runJoinLoad(ctx context.Context, l Launcher, p JoinParams, prog *Progress) ([]JoinLoadResult, error) {
	var out []JoinLoadResult
	for _, impl := range p.Impls {
		r, err := joinLoadOne(ctx, l, p, impl, prog)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func joinLoadOne(ctx context.Context, l Launcher, p JoinParams, impl string, prog *Progress) (res JoinLoadResult, err error) {
	res = JoinLoadResult{Impl: impl, Joiners: p.Joiners}
	prog.Step("%s: preloading %d keys", impl, p.Keys)
	t, err := l.Launch(ctx, impl)
	if err != nil {
		return res, err
	}
	zctx, err := newZctx(2*p.Joiners + 64)
	if err != nil {
		return res, errors.Join(err, t.Stop())
	}
	defer func() { err = errors.Join(err, zctx.Term(), t.Stop()) }()
	m := &mapRig{target: t, zctx: zctx, clk: newClock(), p: MapParams{Loaders: 2}, buckets: 1}
	if _, err := m.load(ctx, p.Keys); err != nil {
		return res, err
	}
	keys := make([][]byte, p.Keys)
	for i := range keys {
		keys[i] = m.key(i)
	}
	prog.Step("%s: %d joiners while %s updates/s stream", impl, p.Joiners, si(p.Rate))
	jctx, cancel := context.WithTimeout(ctx, p.Dur+30*time.Second)
	defer cancel()
	joiners := make([]*cloneJoiner, p.Joiners)
	finals := make([]chan int64, p.Joiners)
	jerrs := make([]error, p.Joiners)
	var wg sync.WaitGroup
	for i := range joiners {
		joiners[i], finals[i] = &cloneJoiner{}, make(chan int64, 1)
		delay := p.Dur * time.Duration(i+1) / time.Duration(p.Joiners+1)
		wg.Go(func() {
			select {
			case <-time.After(delay):
			case <-jctx.Done():
				return
			}
			jerrs[i] = joiners[i].join(jctx, zctx, t.Port, 3*time.Second, finals[i])
		})
	}
	specs := make([]pubSpec, p.Pubs)
	n := int(p.Rate * p.Dur.Seconds())
	for i := range specs {
		specs[i] = pubSpec{Keys: rotate(keys, i*len(keys)/p.Pubs), Body: minBody, N: n / p.Pubs, Rate: p.Rate / float64(p.Pubs), Timed: true}
	}
	sent, _, perr := publishAll(ctx, zctx, t.Port, specs, m.clk)
	res.Updates = sent
	time.Sleep(500 * time.Millisecond)
	final, ferr := fetchSnapshot(zctx, t.Port, "", 20*time.Second, 3*time.Second, true)
	for i := range finals {
		finals[i] <- final.Seq
	}
	wg.Wait()
	if err := errors.Join(perr, ferr, errors.Join(jerrs...)); err != nil {
		return res, err
	}
	res.FinalKeys = len(final.Map)
	for _, j := range joiners {
		if j.complete {
			res.Complete++
		}
		res.Gaps += j.gaps
		res.SnapLost += max(p.Keys+p.Loaders()-j.syncs, 0)
		if final.Complete && maps.Equal(j.m, final.Map) {
			res.Equal++
		}
	}
	return res, nil
}

// Loaders is how many marker keys the preload adds.
func (p JoinParams) Loaders() int { return 2 }
