package actors

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
)

// Reasons the forwarder gives up an update (clonekv_forward_dropped_total).
const (
	DropQueueFull  = "queue_full"  // no leader known (or the leader slow) and the queue is full
	DropHops       = "hops"        // forwarded MaxForwardHops times already (leadership flapping)
	DropStopped    = "stopped"     // still queued when the server stopped
	DropSendFailed = "send_failed" // the socket refused it (not a full queue)
)

// MaxForwardHops bounds how often one update is forwarded from node to
// node. A node that receives a forwarded update while it no longer leads
// forwards it again (to the leader it knows); under leadership flaps two
// nodes could otherwise bounce an update between them for as long as the
// flaps last. Three hops let an update follow two changes of leader while
// it travels.
const MaxForwardHops = 3

// forwardMagic marks the sequence frame of a forwarded update: "CKVF" in
// the high four bytes, the hop count in the low ones. A client's KVSET
// carries a sequence the server ignores (the store assigns its own), so
// the frame is free to carry the hop count from node to node, and what a
// client sees (the published KVPUB, the snapshot) never shows it. The key,
// UUID, properties (ttl included) and body frames are forwarded exactly as
// received.
const forwardMagic = 0x434b5646

// ForwardHops returns how many times an update with client sequence seq
// has been forwarded (0: it came from a client).
func ForwardHops(seq int64) int {
	if uint64(seq)>>32 != forwardMagic {
		return 0
	}
	return int(uint32(seq))
}

// ForwardSeq returns the sequence frame value of an update forwarded hops
// times.
func ForwardSeq(hops int) int64 { return int64(uint64(forwardMagic)<<32 | uint64(uint32(hops))) }

// Forward asks the forwarder to send validated updates to the leader's
// collector. Each item's Msg.Seq already carries its hop count
// (ForwardSeq). Done (if set) is called once every item has been handed to
// the socket or dropped: the collector's credit.
type Forward struct {
	Items []Pending
	Done  func()
}

// ForwarderConfig configures the forwarder.
type ForwarderConfig struct {
	// Context makes the forwarder's socket.
	Context *zmq.Context
	// Sub: the collectors of the cluster are SUB sockets (--collector sub),
	// so the forwarder publishes (XPUB, which tells when the leader's SUB
	// has subscribed, and with XPUB_NODROP reports a full queue instead of
	// dropping); otherwise it PUSHes to their PULL.
	Sub bool
	// MaxQueue and MaxQueueBytes bound the updates waiting for a leader
	// (defaults DefaultForwardQueue, DefaultForwardQueueBytes); beyond them
	// updates are dropped and counted (queue_full).
	MaxQueue      int
	MaxQueueBytes int64
	// SndHWM is the socket's send queue, in messages (default 10000).
	SndHWM int
	// Linger is how long ZeroMQ still tries to deliver what the socket
	// holds when the forwarder leaves a leader or stops (default 1s).
	Linger time.Duration
	// Return receives, as *Updates, what was queued when this node becomes
	// the leader, so that it proposes them itself (default: the parent,
	// which is the proposer in the server).
	Return *actor.PID
	Stats  *stats.Server
	Logger *slog.Logger
}

// Forward queue defaults (ForwarderConfig.MaxQueue, MaxQueueBytes).
const (
	DefaultForwardQueue      = 100000
	DefaultForwardQueueBytes = 64 << 20
)

// Forwarder sends the updates a follower's collector validated to the
// leader's collector, where they are validated and proposed like any
// client's (README "Running a cluster"). It learns the leader from
// *Leadership, which the proposer passes on in order with the batches, and
// reconnects on every change of leader. While no leader is known it keeps a
// bounded queue and flushes it to the next leader; when this node becomes
// the leader it hands the queue back (Return) to be proposed here.
//
// Like a socket adapter, it owns one goroutine that alone touches its
// socket (connect, send, close); Receive only hands messages to it over a
// bounded channel that the goroutine drains at once (it never blocks for
// longer than pollInterval), so Receive never waits on the network.
type Forwarder struct {
	cfg ForwarderConfig
	ch  chan any // *Forward, *Leadership
	own struct {
		started bool
		done    chan struct{}
	}
}

// pollInterval bounds how long the goroutine waits on a full socket (or
// for a subscription) before it looks at its channel again.
const pollInterval = 10 * time.Millisecond

// NewForwarder returns the forwarder; spawn it with Props.
func NewForwarder(cfg ForwarderConfig) *Forwarder {
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultForwardQueue
	}
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = DefaultForwardQueueBytes
	}
	if cfg.SndHWM <= 0 {
		cfg.SndHWM = 10000
	}
	if cfg.Linger <= 0 {
		cfg.Linger = time.Second
	}
	if cfg.Stats == nil {
		cfg.Stats = &stats.Server{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{cfg: cfg, ch: make(chan any, 64)}
	f.own.done = make(chan struct{})
	return f
}

// Props spawns the forwarder from the root. The same Forwarder is kept
// across restarts (its goroutine is started once).
func (f *Forwarder) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return f },
		actor.WithGuardian(actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.ResumeDirective })))
}

// ChildProps spawns the forwarder as another actor's child (the
// proposer's), supervised by its parent.
func (f *Forwarder) ChildProps() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return f })
}

// Receive hands *Forward and *Leadership to the goroutine.
func (f *Forwarder) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if !f.own.started {
			f.own.started = true
			ret := f.cfg.Return
			if ret == nil {
				ret = ctx.Parent()
			}
			root := ctx.ActorSystem().Root
			go func() {
				defer close(f.own.done)
				(&forwardLoop{f: f, root: root, ret: ret}).run()
			}()
		}
	case *Forward, *Leadership:
		if !f.own.started {
			return
		}
		select {
		case f.ch <- m:
		case <-f.own.done:
			if fw, ok := m.(*Forward); ok {
				f.cfg.Stats.ForwardDropped.Add(DropStopped, int64(len(fw.Items)))
				if fw.Done != nil {
					fw.Done()
				}
			}
		}
	case *actor.Stopping:
		if f.own.started {
			close(f.ch)
			<-f.own.done
		}
	}
}

// fwdBatch is one Forward being sent: its messages, encoded once.
type fwdBatch struct {
	items []Pending
	msgs  [][][]byte
	sizes []int64
	next  int
	done  func()
}

// forwardLoop is the goroutine's state; only the goroutine touches it.
type forwardLoop struct {
	f       *Forwarder
	root    *actor.RootContext
	ret     *actor.PID
	sock    *zmq.Socket
	pollIn  *zmq.Poller // the subscription (XPUB)
	pollOut *zmq.Poller // room to send
	target  string      // the leader's collector ("" : none, or this node)
	self    bool
	ready   bool // XPUB: the leader's SUB has subscribed
	q       []*fwdBatch
	msgs    int
	bytes   int64
}

func (l *forwardLoop) run() {
	defer l.stop()
	for {
		// Block for input when there is nothing the socket can take.
		if l.sock == nil || len(l.q) == 0 {
			m, ok := <-l.f.ch
			if !ok {
				return
			}
			l.handle(m)
		}
		for more := true; more; {
			select {
			case m, ok := <-l.f.ch:
				if !ok {
					return
				}
				l.handle(m)
			default:
				more = false
			}
		}
		if l.sock == nil {
			continue
		}
		if !l.ready {
			l.awaitSubscription()
			continue
		}
		if l.f.cfg.Sub {
			l.subscriptions() // the leader's SUB may have gone
			if !l.ready {
				continue
			}
		}
		if !l.send(256) {
			return
		}
	}
}

func (l *forwardLoop) handle(m any) {
	switch m := m.(type) {
	case *Forward:
		l.enqueue(m)
	case *Leadership:
		l.lead(m)
	}
}

// enqueue queues a batch, dropping (and counting) what does not fit.
func (l *forwardLoop) enqueue(m *Forward) {
	cfg := &l.f.cfg
	b := &fwdBatch{done: m.Done}
	for _, it := range m.Items {
		frames := it.Msg.Frames()
		var size int64
		for _, fr := range frames {
			size += int64(len(fr))
		}
		if l.msgs+len(b.msgs)+1 > cfg.MaxQueue || l.bytes+sum(b.sizes)+size > cfg.MaxQueueBytes {
			cfg.Stats.ForwardDropped.Add(DropQueueFull, 1)
			continue
		}
		b.items = append(b.items, it)
		b.msgs = append(b.msgs, frames)
		b.sizes = append(b.sizes, size)
	}
	if len(b.msgs) == 0 {
		l.release(b)
		return
	}
	if l.self {
		// Not for us to forward: the proposer leads here (it sends us
		// nothing while it does, but a batch may cross a change).
		l.giveBack([]*fwdBatch{b})
		return
	}
	l.q = append(l.q, b)
	l.msgs += len(b.msgs)
	l.bytes += sum(b.sizes)
	l.gauge()
}

func sum(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}

// lead follows a change of leadership: a new leader gets a new socket
// (the old one closes with its linger, delivering what it holds to the old
// leader, which forwards it on); this node leading takes its queue back.
func (l *forwardLoop) lead(m *Leadership) {
	l.self = m.Self
	target := m.Collector
	if m.Self {
		target = ""
	}
	if target != l.target || l.sock == nil && target != "" {
		l.disconnect()
		l.target = target
		if target != "" {
			l.connect()
		}
	}
	if m.Self && len(l.q) > 0 {
		q := l.q
		l.q, l.msgs, l.bytes = nil, 0, 0
		l.gauge()
		l.giveBack(q)
	}
}

func (l *forwardLoop) connect() {
	cfg := &l.f.cfg
	typ := zmq.PUSH
	if cfg.Sub {
		typ = zmq.XPUB
	}
	// PUSH queues only to a completed connection (IMMEDIATE): while the
	// leader is unreachable, or once its connection dropped (the process
	// died), sends fail with EAGAIN and updates stay in our queue, for the
	// next leader, rather than in a pipe closed with the socket.
	sock, err := transport.NewSocket(cfg.Context, typ, transport.Options{SndHWM: cfg.SndHWM, Linger: cfg.Linger, Immediate: !cfg.Sub})
	if err == nil && cfg.Sub {
		if err = sock.SetXpubNodrop(true); err != nil {
			sock.Close()
		}
	}
	if err == nil {
		if err = sock.Connect(l.target); err != nil {
			sock.Close()
			err = fmt.Errorf("connect to %s: %w", l.target, err)
		}
	}
	if err != nil {
		// Queued updates wait for the next leader.
		cfg.Logger.Error("forwarder: cannot reach the leader's collector", "leader", l.target, "err", err)
		return
	}
	l.sock, l.ready = sock, !cfg.Sub
	l.pollIn, l.pollOut = zmq.NewPoller(), zmq.NewPoller()
	l.pollIn.Add(sock, zmq.POLLIN)
	l.pollOut.Add(sock, zmq.POLLOUT)
	cfg.Logger.Debug("forwarding to the leader", "collector", l.target)
}

func (l *forwardLoop) disconnect() {
	if l.sock != nil {
		l.sock.Close() // with its linger: what it holds still goes out
		l.sock, l.pollIn, l.pollOut = nil, nil, nil
	}
}

// awaitSubscription waits (a poll interval at most) for the leader's SUB
// to subscribe: an XPUB drops what it sends before then.
func (l *forwardLoop) awaitSubscription() {
	polled, err := l.pollIn.Poll(pollInterval)
	if err != nil || len(polled) == 0 {
		return
	}
	l.subscriptions()
}

// subscriptions reads what the XPUB has heard: the leader's SUB
// subscribing (1) or, when its connection ends, unsubscribing (0), after
// which updates wait in our queue instead of being dropped by the XPUB.
func (l *forwardLoop) subscriptions() {
	for {
		sub, err := l.sock.RecvBytes(zmq.DONTWAIT)
		if err != nil {
			return
		}
		if len(sub) > 0 {
			l.ready = sub[0] == 1
		}
	}
}

// send hands up to max queued messages to the socket, releasing each
// batch's credit once all of it is handed over; on a full socket it waits
// a poll interval. It returns false when the context is terminating.
func (l *forwardLoop) send(max int) bool {
	cfg := &l.f.cfg
	for n := 0; n < max && len(l.q) > 0; n++ {
		b := l.q[0]
		err := transport.SendMessage(l.sock, b.msgs[b.next], zmq.DONTWAIT)
		switch {
		case err == nil:
			cfg.Stats.UpdatesForwarded.Add(1)
		case transport.IsAgain(err) || transport.IsInterrupted(err):
			l.pollOut.Poll(pollInterval)
			return true
		case transport.IsTerm(err):
			return false
		default:
			cfg.Logger.Warn("forwarder: send failed; update dropped", "leader", l.target, "err", err)
			cfg.Stats.ForwardDropped.Add(DropSendFailed, 1)
		}
		l.msgs--
		l.bytes -= b.sizes[b.next]
		b.next++
		if b.next == len(b.msgs) {
			l.q[0] = nil
			l.q = l.q[1:]
			l.release(b)
		}
	}
	l.gauge()
	return true
}

// giveBack returns what is left of batches to the proposer (this node now
// leads), with their credits.
func (l *forwardLoop) giveBack(q []*fwdBatch) {
	for _, b := range q {
		items := b.items[b.next:]
		if l.ret == nil {
			l.f.cfg.Stats.ForwardDropped.Add(DropStopped, int64(len(items)))
			l.release(b)
			continue
		}
		l.f.cfg.Stats.StoreBacklog.Add(1)
		l.root.Send(l.ret, &Updates{Items: items, Done: b.done})
	}
}

func (l *forwardLoop) release(b *fwdBatch) {
	if b.done != nil {
		b.done()
	}
}

func (l *forwardLoop) gauge() {
	l.f.cfg.Stats.ForwardQueued.Store(int64(l.msgs))
	l.f.cfg.Stats.ForwardQueuedBytes.Store(l.bytes)
}

// stop makes a last attempt to hand what is queued to the socket, drops
// (and counts) the rest, and closes the socket with its linger.
func (l *forwardLoop) stop() {
	if l.sock != nil && l.ready {
		for len(l.q) > 0 {
			b := l.q[0]
			if err := transport.SendMessage(l.sock, b.msgs[b.next], zmq.DONTWAIT); err != nil {
				break
			}
			l.f.cfg.Stats.UpdatesForwarded.Add(1)
			b.next++
			if b.next == len(b.msgs) {
				l.q = l.q[1:]
				l.release(b)
			}
		}
	}
	for _, b := range l.q {
		l.f.cfg.Stats.ForwardDropped.Add(DropStopped, int64(len(b.msgs)-b.next))
		l.release(b)
	}
	l.q, l.msgs, l.bytes = nil, 0, 0
	l.gauge()
	l.disconnect()
}
