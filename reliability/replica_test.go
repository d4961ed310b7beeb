package reliability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// replica is a minimal re-joining Clone client used where a test needs one
// that recovers by itself (a subscriber that lost updates, a restarted
// server). It follows the whole map (subtree ""), so any sequence gap is a
// lost update. It re-joins — fresh SUB and DEALER, snapshot, then the
// stream — when it sees a gap, when the server is silent (no HUGZ or update)
// for Silence, or when a live update's sequence goes backwards (a restarted
// server without persistence). Its sockets belong to its one goroutine;
// tests read its state through State.
type replica struct {
	zctx    *zmq.Context
	port    int
	silence time.Duration
	rcvHWM  int
	// pause makes the goroutine stop reading (a slow consumer) until the
	// request's resume channel is closed.
	pause chan pauseRequest
	query chan chan replicaState
	done  chan error
}

// pauseRequest asks the replica to stop reading: it sends its state as it
// stops on at, then waits for resume to be closed.
type pauseRequest struct {
	resume chan struct{}
	at     chan replicaState
}

// replicaState is a copy of a replica's state.
type replicaState struct {
	Map     map[string]string
	Seq     int64
	Joins   int // snapshots completed
	Gaps    int // re-joins caused by a sequence gap
	Silent  int // re-joins caused by silence
	Resets  int // re-joins caused by a sequence going backwards
	Applied int // live updates applied
	Recv    int // messages received on the SUB (heartbeats included)
}

// clone is a copy of st that shares nothing with it.
func (st *replicaState) clone() replicaState {
	cp := *st
	cp.Map = maps.Clone(st.Map)
	return cp
}

// startReplica starts a replica; rcvHWM is its SUB's receive high-water
// mark (0: 100000).
func startReplica(ctx context.Context, zctx *zmq.Context, port int, silence time.Duration, rcvHWM int) *replica {
	if rcvHWM <= 0 {
		rcvHWM = 100000
	}
	r := &replica{zctx: zctx, port: port, silence: silence, rcvHWM: rcvHWM,
		pause: make(chan pauseRequest), query: make(chan chan replicaState), done: make(chan error, 1)}
	go func() { r.done <- r.run(ctx) }()
	return r
}

// State returns a copy of the replica's state, or an error if it stopped.
func (r *replica) State(d time.Duration) (replicaState, error) {
	ch := make(chan replicaState, 1)
	select {
	case r.query <- ch:
	case err := <-r.done:
		r.done <- err
		return replicaState{}, fmt.Errorf("replica stopped: %v", err)
	case <-time.After(d):
		return replicaState{}, errors.New("replica did not answer")
	}
	select {
	case st := <-ch:
		return st, nil
	case <-time.After(d):
		return replicaState{}, errors.New("replica did not answer")
	}
}

// Pause stops the replica reading until the returned func is called. It
// also returns the replica's state at the moment it stopped, so that a
// test can tell what the pause caused from what happened before it.
func (r *replica) Pause(d time.Duration) (resume func(), at replicaState, err error) {
	req := pauseRequest{resume: make(chan struct{}), at: make(chan replicaState, 1)}
	select {
	case r.pause <- req:
		return func() { close(req.resume) }, <-req.at, nil
	case <-time.After(d):
		return nil, replicaState{}, errors.New("replica did not pause")
	}
}

type replicaSocks struct {
	sub, dealer *zmq.Socket
}

func (s *replicaSocks) close() {
	if s.sub != nil {
		s.sub.Close()
	}
	if s.dealer != nil {
		s.dealer.Close()
	}
	s.sub, s.dealer = nil, nil
}

func (r *replica) run(ctx context.Context) error {
	st := replicaState{Map: map[string]string{}}
	var socks replicaSocks
	defer socks.close()
	for ctx.Err() == nil {
		socks.close()
		var err error
		if socks.sub, err = transport.Connect(r.zctx, zmq.SUB, endpoint(r.port, 1),
			transport.Options{Subscribe: []string{""}, RcvHWM: r.rcvHWM}); err != nil {
			return err
		}
		if socks.dealer, err = transport.Connect(r.zctx, zmq.DEALER, endpoint(r.port, 0), transport.Options{}); err != nil {
			return err
		}
		if !r.join(ctx, &socks, &st) {
			continue
		}
		why := r.follow(ctx, &socks, &st)
		switch why {
		case "gap":
			st.Gaps++
		case "silence":
			st.Silent++
		case "reset":
			st.Resets++
		}
	}
	return nil
}

// join asks for the whole map and replaces the replica's state with it. It
// gives up (false) when no KTHXBAI arrives within silence of the last
// message, so a dead server is retried.
func (r *replica) join(ctx context.Context, s *replicaSocks, st *replicaState) bool {
	if err := transport.SendMessage(s.dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), nil}, zmq.DONTWAIT); err != nil {
		time.Sleep(r.silence / 4)
		return false
	}
	m := map[string]string{}
	for ctx.Err() == nil {
		if served, _ := r.serve(ctx, st); served {
			continue
		}
		frames, err := testkit.RecvWithin(s.dealer, r.silence)
		if err != nil {
			return false
		}
		msg, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			return false
		}
		if string(msg.Key) == kvmsg.KeySnapshotEnd {
			st.Map, st.Seq = m, msg.Seq
			st.Joins++
			return true
		}
		m[string(msg.Key)] = string(msg.Body)
	}
	return false
}

// follow applies the stream until something calls for a re-join; it
// returns why.
func (r *replica) follow(ctx context.Context, s *replicaSocks, st *replicaState) string {
	poller := zmq.NewPoller()
	poller.Add(s.sub, zmq.POLLIN)
	last := time.Now()
	live := false // a live update was applied since the join
	for ctx.Err() == nil {
		if served, paused := r.serve(ctx, st); served {
			if paused {
				last = time.Now() // a pause is not the server's silence
			}
			continue
		}
		polled, err := poller.Poll(20 * time.Millisecond)
		if err != nil {
			return "error"
		}
		if len(polled) == 0 {
			if time.Since(last) > r.silence {
				return "silence"
			}
			continue
		}
		frames, _, err := transport.RecvMessage(s.sub, 0, nil)
		if err != nil {
			return "error"
		}
		last = time.Now()
		st.Recv++
		msg, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil || string(msg.Key) == kvmsg.KeyHeartbeat {
			continue
		}
		switch {
		case msg.Seq <= st.Seq:
			if live {
				return "reset"
			}
			// buffered before the snapshot: already in it
		case msg.Seq > st.Seq+1:
			return "gap"
		default:
			live = true
			st.Seq = msg.Seq
			st.Applied++
			if len(msg.Body) == 0 {
				delete(st.Map, string(msg.Key))
			} else {
				st.Map[string(msg.Key)] = string(msg.Body)
			}
		}
	}
	return "stopped"
}

// serve answers a pending query or pause without blocking; it reports
// whether it did anything, and whether that was a pause.
func (r *replica) serve(ctx context.Context, st *replicaState) (served, paused bool) {
	select {
	case ch := <-r.query:
		ch <- st.clone()
		return true, false
	case req := <-r.pause:
		req.at <- st.clone()
		select {
		case <-req.resume:
		case <-ctx.Done():
		}
		return true, true
	default:
		return false, false
	}
}
