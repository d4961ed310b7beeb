package adapter

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
)

// Request is one message received on the ROUTER: the peer's routing
// identity and the frames after it.
type Request struct {
	Peer   []byte
	Frames [][]byte // at most MaxFrames-1 kept
	Count  int      // the real number of frames after the identity
}

// Send asks the Router to deliver Msgs (without the identity frame) to
// Peer, in order. When all are handed to the socket, or the peer is gone,
// the Router sends *Sent{Tag, Err} to ReplyTo. Msgs must not change until
// then.
type Send struct {
	Peer    []byte
	Msgs    *transport.Flat
	ReplyTo *actor.PID
	Tag     any
	// Replace first drops every batch still queued for Peer (each reported
	// with ErrCanceled), so that Msgs go next: how a stream that is given
	// up is ended with a final message.
	Replace bool
	// Deadline, when not zero, bounds how long the batch may wait for the
	// peer: not wholly handed to the socket by then, it is dropped and
	// reported with ErrExpired.
	Deadline time.Time
	// Attained is how many messages the peer's stream had been sent
	// before this batch. Peers are served least attained first: in a turn,
	// only the peers within attainedSlack of the least attained one that
	// can take messages are written (all of them every fairTurns turns,
	// so none starves). A fresh joiner thus gets the socket ahead of long
	// streams, and of stalled peers whose buffers still absorb data, and is
	// paced only by its own reading; joiners at a like point share it.
	Attained int64
}

// Least-attained-first scheduling (Send.Attained).
const (
	attainedSlack = 2048
	fairTurns     = 16
)

// Sent reports the outcome of a Send.
type Sent struct {
	Tag any
	Err error // nil, ErrPeerGone, ErrStopped, ErrCanceled or ErrExpired
}

// Errors reported in Sent.
var (
	ErrPeerGone = errors.New("adapter: peer is not connected")
	ErrStopped  = errors.New("adapter: router stopped")
	ErrCanceled = errors.New("adapter: replaced by a later send")
	ErrExpired  = errors.New("adapter: deadline passed before the peer took it")
)

// RouterConfig configures a Router.
type RouterConfig struct {
	Socket  *zmq.Socket  // bound ROUTER with ROUTER_MANDATORY set; the Router owns it
	Context *zmq.Context // for the inproc wake-up pipe
	Target  *actor.PID   // receives *Request
	// Quantum is how many messages one peer may send before the next peer
	// gets a turn, so concurrent snapshot streams interleave. Default 64.
	Quantum int
	// Retry is how long to wait before retrying a peer whose queue at the
	// socket was full (default 1ms); each failed retry doubles the wait, up
	// to MaxRetry (default 32ms), so a peer that stopped reading costs a
	// few dozen tries a second, not a thousand.
	Retry    time.Duration
	MaxRetry time.Duration
	Logger   *slog.Logger
}

// Router is the socket adapter for the snapshot ROUTER, a socket that is
// read and written. Its goroutine polls the ROUTER and an inproc wake-up
// pipe: requests go to Target as *Request; *Send batches queue per peer and
// are written round-robin, a quantum per peer per turn. The socket has
// ROUTER_MANDATORY set, so a peer whose pipe is full makes the send fail with
// EAGAIN instead of silently dropping the message: that peer waits and
// retries while the others go on. This is how a large snapshot is paced:
// every message arrives and a slow reader delays only itself.
type Router struct {
	cfg     RouterConfig
	ch      chan *Send
	pending atomic.Bool
	wakeTx  *zmq.Socket // used only by the actor's Receive (one at a time)
	wakeRx  *zmq.Socket // used only by the goroutine
	own     *owner
	wakeEP  string
}

var routerSeq atomic.Int64

// NewRouter creates the adapter and its wake-up pipe.
func NewRouter(cfg RouterConfig) (*Router, error) {
	if cfg.Quantum <= 0 {
		cfg.Quantum = 64
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Millisecond
	}
	if cfg.MaxRetry < cfg.Retry {
		cfg.MaxRetry = max(32*time.Millisecond, cfg.Retry)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Router{cfg: cfg, ch: make(chan *Send, 1024), own: newOwner()}
	r.wakeEP = fmt.Sprintf("inproc://clonekv-router-wake-%d", routerSeq.Add(1))
	var err error
	if r.wakeRx, err = transport.Bind(cfg.Context, zmq.PULL, r.wakeEP, transport.Options{}); err != nil {
		return nil, fmt.Errorf("router wake pipe: %w", err)
	}
	if r.wakeTx, err = transport.Connect(cfg.Context, zmq.PUSH, r.wakeEP, transport.Options{}); err != nil {
		r.wakeRx.Close()
		return nil, fmt.Errorf("router wake pipe: %w", err)
	}
	return r, nil
}

// Props spawns the adapter. The same Router is kept across restarts.
func (r *Router) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return r }, actor.WithGuardian(resumeAlways()))
}

// Receive queues *Send batches for the goroutine.
func (r *Router) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		root := c.ActorSystem().Root
		r.own.start(func() { r.run(root) })
	case *Send:
		select {
		case r.ch <- m:
			r.wake()
		case <-r.own.done:
			root := c.ActorSystem().Root
			if m.ReplyTo != nil {
				root.Send(m.ReplyTo, &Sent{Tag: m.Tag, Err: ErrStopped})
			}
		}
	case *actor.Stopping:
		r.own.halt(r.wake, func() {
			r.cfg.Socket.Close()
			r.wakeRx.Close()
		})
		r.wakeTx.Close()
	}
}

// wake makes the goroutine's poll return. Wake-ups coalesce: at most one
// byte is in the pipe at a time.
func (r *Router) wake() {
	if r.pending.CompareAndSwap(false, true) {
		if _, err := r.wakeTx.SendBytes([]byte{1}, zmq.DONTWAIT); err != nil && !transport.IsAgain(err) {
			r.cfg.Logger.Error("router wake failed", "err", err)
		}
	}
}

// peerQueue is the ordered list of batches waiting for one peer.
type peerQueue struct {
	peer    []byte
	batches []*Send
	next    int           // index of the next message of batches[0]
	full    bool          // the last send hit the peer's high-water mark
	retryAt time.Time     // when full: the next try
	backoff time.Duration // when full: the wait before retryAt
}

// attained is how many messages q's current stream has been sent.
func (q *peerQueue) attained() int64 {
	if len(q.batches) == 0 {
		return 0
	}
	return q.batches[0].Attained + int64(q.next)
}

// wait returns how long the loop may sleep before q needs a turn: 0 when
// it can send now, else until its retry or its first batch's deadline.
func (q *peerQueue) wait(now time.Time) time.Duration {
	if !q.full {
		return 0
	}
	at := q.retryAt
	for _, b := range q.batches {
		if !b.Deadline.IsZero() && b.Deadline.Before(at) {
			at = b.Deadline
		}
	}
	return max(at.Sub(now), 0)
}

func (r *Router) run(root *actor.RootContext) {
	sock := r.cfg.Socket
	defer sock.Close()
	defer r.wakeRx.Close()

	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	poller.Add(r.wakeRx, zmq.POLLIN)

	queues := make(map[string]*peerQueue)
	var order []*peerQueue // round-robin order of non-empty queues
	var turn int
	rx := transport.NewReceiver(sock)

	defer func() {
		for _, q := range order {
			r.fail(root, q, ErrStopped)
		}
	}()

	for {
		timeout := time.Duration(-1)
		now := time.Now()
		for _, q := range order {
			if w := q.wait(now); timeout < 0 || w < timeout {
				timeout = w
			}
		}
		polled, err := poller.Poll(timeout)
		if err != nil {
			if transport.IsTerm(err) {
				return
			}
			if !transport.IsInterrupted(err) {
				r.cfg.Logger.Error("router poll failed", "err", err)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		for _, p := range polled {
			if p.Socket == r.wakeRx {
				for {
					if _, err := r.wakeRx.RecvBytes(zmq.DONTWAIT); err != nil {
						break
					}
				}
				// Reset before draining: a Send queued after this point
				// wakes us again, so none is left unseen.
				r.pending.Store(false)
				select {
				case <-r.own.stop:
					return
				default:
				}
			drain:
				for {
					select {
					case s := <-r.ch:
						q := queues[string(s.Peer)]
						if q == nil {
							q = &peerQueue{peer: s.Peer}
							queues[string(s.Peer)] = q
							order = append(order, q)
						}
						if s.Replace {
							r.fail(root, q, ErrCanceled)
							q.next = 0
						}
						q.batches = append(q.batches, s)
					default:
						break drain
					}
				}
			}
			if p.Socket == sock {
				// Read at most a quantum of requests per turn so that a
				// request flood cannot starve the streams.
				for i := 0; i < r.cfg.Quantum; i++ {
					frames, n, err := rx.Recv(zmq.DONTWAIT)
					if err != nil {
						if transport.IsTerm(err) {
							return
						}
						break
					}
					frames = transport.Clone(frames)
					req := &Request{Peer: frames[0], Frames: frames[1:], Count: n - 1}
					root.Send(r.cfg.Target, req)
				}
			}
		}
		// One turn of sending: each peer due a quantum, in order, or on
		// most turns only those near the least attained service.
		now = time.Now()
		turn++
		// The least is taken over peers that took their last messages (not
		// full): one that is only due a retry must not hold the others
		// back until it has shown it can take something.
		least := int64(-1)
		if turn%fairTurns != 0 {
			for _, q := range order {
				if len(q.batches) > 0 && !q.full {
					if a := q.attained(); least < 0 || a < least {
						least = a
					}
				}
			}
		}
		kept := order[:0]
		for _, q := range order {
			r.expire(root, q, now)
			if len(q.batches) == 0 {
				delete(queues, string(q.peer))
				continue
			}
			if (q.full && now.Before(q.retryAt)) || (least >= 0 && q.attained() > least+attainedSlack) {
				kept = append(kept, q)
				continue
			}
			done, err := r.sendQuantum(root, sock, q, now)
			if err != nil {
				if transport.IsTerm(err) {
					return
				}
				if !transport.IsHostUnreachable(err) {
					r.cfg.Logger.Warn("snapshot send failed; abandoning the peer's stream", "peer", fmt.Sprintf("%x", q.peer), "err", err)
				}
				r.fail(root, q, ErrPeerGone)
				delete(queues, string(q.peer))
				continue
			}
			if done {
				delete(queues, string(q.peer))
				continue
			}
			kept = append(kept, q)
		}
		for i := len(kept); i < len(order); i++ {
			order[i] = nil
		}
		order = kept
	}
}

// expire drops q's batches whose deadline has passed.
func (r *Router) expire(root *actor.RootContext, q *peerQueue, now time.Time) {
	kept := q.batches[:0]
	for i, b := range q.batches {
		if b.Deadline.IsZero() || now.Before(b.Deadline) {
			kept = append(kept, b)
			continue
		}
		if i == 0 {
			q.next = 0
		}
		if b.ReplyTo != nil {
			root.Send(b.ReplyTo, &Sent{Tag: b.Tag, Err: ErrExpired})
		}
	}
	clear(q.batches[len(kept):])
	q.batches = kept
}

// sendQuantum writes up to a quantum of q's messages. It returns done when
// q is empty, and an error when the peer is gone (or the socket is). A
// peer found full is retried after a wait that doubles while it stays
// full and resets once it takes a message.
func (r *Router) sendQuantum(root *actor.RootContext, sock *zmq.Socket, q *peerQueue, now time.Time) (done bool, err error) {
	q.full = false
	for budget := r.cfg.Quantum; budget > 0 && len(q.batches) > 0; {
		b := q.batches[0]
		n, err := transport.SendFlat(sock, b.Msgs, q.next, budget, q.peer, zmq.DONTWAIT)
		q.next += n
		budget -= n
		if n > 0 {
			q.backoff = 0
		}
		if q.next >= b.Msgs.Len() {
			if b.ReplyTo != nil {
				root.Send(b.ReplyTo, &Sent{Tag: b.Tag})
			}
			q.batches[0] = nil
			q.batches = q.batches[1:]
			q.next = 0
		}
		if err != nil {
			if transport.IsAgain(err) || transport.IsInterrupted(err) {
				// Full (or a signal interrupted the call): this peer waits
				// for the retry, the others go on.
				q.full = true
				q.backoff = min(max(2*q.backoff, r.cfg.Retry), r.cfg.MaxRetry)
				q.retryAt = now.Add(q.backoff)
				return false, nil
			}
			return false, err
		}
	}
	return len(q.batches) == 0, nil
}

func (r *Router) fail(root *actor.RootContext, q *peerQueue, err error) {
	for _, b := range q.batches {
		if b.ReplyTo != nil {
			root.Send(b.ReplyTo, &Sent{Tag: b.Tag, Err: err})
		}
	}
	q.batches = nil
}
