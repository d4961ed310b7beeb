package actors

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Handler is an extension of the server: it is told every batch of updates
// the store commits, in sequence order, one batch at a time. It needs no
// knowledge of actors or mailboxes: the server runs each handler on a
// goroutine of its own, fed through a bounded queue by an actor of its own
// (HandlerRunner), so a handler that is slow, blocks or panics can delay or
// lose only its own batches, never the store, the publisher or the other
// handlers.
//
// OnCommit may take its time, but the queue in front of it is bounded: when
// it is full the server drops batches for this handler, counts them
// (HandlerStatus.Dropped, the clonekv_handler_dropped_updates_total metric)
// and tells the handler how many it missed (Batch.Dropped). A handler that
// must not miss anything should keep OnCommit short (hand slow work, such as
// network I/O, to a goroutine of its own with its own policy) and size its
// queue (server.Handler.Queue) for its bursts.
//
// A handler may also implement Opener and Closer.
type Handler interface {
	OnCommit(b Batch)
}

// Opener is implemented by handlers that need something before the first
// batch (a file, a connection). server.New calls Open; an error fails New,
// which then releases everything it started, Close of the handlers already
// opened included.
type Opener interface {
	Open() error
}

// Closer is implemented by handlers that release something after the last
// batch. It is called once, on the handler's goroutine after its last
// OnCommit returned: at shutdown once its queue is drained, or once the
// shutdown's deadline made the server abandon what was still queued.
type Closer interface {
	Close() error
}

// Batch is one committed batch as a handler sees it. It is the handler's
// own copy, made for it alone: the handler may keep it, change it or append
// to it, and nothing it does changes what subscribers, snapshots or the
// other handlers see.
type Batch struct {
	// Updates are the committed updates in sequence order (never empty).
	Updates []Update
	// Dropped is how many updates were dropped for this handler, because
	// its queue was full, between the batch it saw before and this one:
	// their sequences are the gap before Updates[0].Msg.Seq.
	Dropped int64
}

// DefaultHandlerQueue is how many batches may wait for a handler when its
// configuration does not say.
const DefaultHandlerQueue = 1024

// HandlerConfig configures a HandlerRunner.
type HandlerConfig struct {
	// Name names the handler in logs and metrics (unique within a server).
	Name    string
	Handler Handler
	// Queue is how many batches may wait for the handler; beyond it,
	// batches are dropped for it (default DefaultHandlerQueue).
	Queue int
	// Logger receives the lines about a handler that falls behind, catches
	// up, panics or fails to close; default slog.Default().
	Logger *slog.Logger
	// LogEvery is the least time between two "falling behind" or
	// "panicked" lines of this handler; the ones held back are counted in
	// the next. Default 10s.
	LogEvery time.Duration
}

// HandlerStatus is what the server knows about one handler now.
type HandlerStatus struct {
	Name string
	// Queued is how many batches wait for the handler now, of QueueCap.
	Queued, QueueCap int
	// Lag is how many sequences the handler is behind: the last sequence
	// committed to it (delivered or dropped) minus the last it finished.
	Lag int64
	// Handled counts the updates whose batch OnCommit finished (returned
	// or panicked), Dropped those the handler never got (queue full, or
	// abandoned at shutdown), Panics the OnCommit calls that panicked.
	Handled, Dropped, Panics int64
	// Busy is how long the OnCommit call in progress has run (0: idle).
	Busy time.Duration
}

// queued is one batch waiting for the handler, with the number of updates
// dropped for it just before.
type queued struct {
	c       *Committed
	dropped int64
}

// HandlerRunner is the actor that runs one Handler. Its Receive (the store
// sends it every *Committed) never blocks: it puts the batch on a bounded
// queue, or drops it when the queue is full. A goroutine it owns takes the
// batches off the queue, copies each and calls OnCommit, recovering and
// reporting panics. Stopping the actor closes the queue; the goroutine
// delivers what is queued, calls Close, and ends (Done); Abandon makes it
// stop delivering instead.
type HandlerRunner struct {
	cfg   HandlerConfig
	queue chan queued

	// Only Receive uses these (one message at a time).
	pendingDrop int64
	closed      bool

	startOnce sync.Once
	closeOnce sync.Once
	abandonMu sync.Once
	abandon   chan struct{}
	done      chan struct{}

	committedSeq atomic.Int64 // last sequence offered
	handledSeq   atomic.Int64 // last sequence OnCommit finished
	handled      atomic.Int64
	dropped      atomic.Int64
	panics       atomic.Int64
	busySince    atomic.Int64 // unix nanoseconds; 0 when idle
	behind       atomic.Bool  // dropping since the queue was last empty
	episode      atomic.Int64 // updates dropped in the current "behind" episode
	warned       atomic.Bool  // the current episode's start was logged

	behindLog, panicLog rateLimit
}

// NewHandlerRunner returns the runner; spawn it with Props.
func NewHandlerRunner(cfg HandlerConfig) *HandlerRunner {
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultHandlerQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = 10 * time.Second
	}
	cfg.Logger = cfg.Logger.With("handler", cfg.Name)
	return &HandlerRunner{
		cfg:       cfg,
		queue:     make(chan queued, cfg.Queue),
		abandon:   make(chan struct{}),
		done:      make(chan struct{}),
		behindLog: rateLimit{every: cfg.LogEvery},
		panicLog:  rateLimit{every: cfg.LogEvery},
	}
}

// Props spawns the runner. The same runner is kept across restarts (its
// Receive has no user code, so it does not fail; the guardian resumes it
// regardless).
func (r *HandlerRunner) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return r },
		actor.WithGuardian(actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.ResumeDirective })))
}

// Name returns the handler's name.
func (r *HandlerRunner) Name() string { return r.cfg.Name }

// Receive starts the handler's goroutine on Started, queues or drops each
// *Committed, and closes the queue on Stopping.
func (r *HandlerRunner) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.startOnce.Do(func() { go r.run() })
	case *Committed:
		r.offer(m)
	case *actor.Stopping:
		if !r.closed {
			r.closed = true
			close(r.queue)
		}
	}
}

func (r *HandlerRunner) offer(c *Committed) {
	if len(c.Updates) == 0 {
		return
	}
	r.committedSeq.Store(c.Updates[len(c.Updates)-1].Msg.Seq)
	if !r.closed {
		select {
		case r.queue <- queued{c: c, dropped: r.pendingDrop}:
			r.pendingDrop = 0
			return
		default:
		}
	}
	n := int64(len(c.Updates))
	r.pendingDrop += n
	r.dropped.Add(n)
	r.episode.Add(n)
	if !r.behind.Swap(true) {
		if suppressed, ok := r.behindLog.allow(time.Now()); ok {
			args := []any{"queue", cap(r.queue), "dropped_total", r.dropped.Load()}
			if busy := r.busy(); busy > 0 {
				args = append(args, "busy_for", busy.Round(time.Millisecond))
			}
			if suppressed > 0 {
				args = append(args, "episodes_suppressed", suppressed)
			}
			r.cfg.Logger.Warn("handler is falling behind: its queue is full, dropping batches for it", args...)
			r.warned.Store(true)
		}
	}
}

// run delivers queued batches until the queue is closed and empty, or
// Abandon is called; then it closes the handler.
func (r *HandlerRunner) run() {
	defer close(r.done)
	defer r.closeHandler()
	for {
		select {
		case <-r.abandon:
			r.dropQueued()
			return
		default:
		}
		select {
		case q, ok := <-r.queue:
			if !ok {
				return
			}
			r.deliver(q)
		case <-r.abandon:
			r.dropQueued()
			return
		}
	}
}

// deliver hands one batch to the handler, a copy of it, with any panic
// recovered, counted and logged.
func (r *HandlerRunner) deliver(q queued) {
	ups := q.c.Updates
	first, last := ups[0].Msg.Seq, ups[len(ups)-1].Msg.Seq
	b := Batch{Updates: copyUpdates(ups), Dropped: q.dropped}
	r.busySince.Store(time.Now().UnixNano())
	r.call(func() { r.cfg.Handler.OnCommit(b) }, "OnCommit", first, last)
	r.busySince.Store(0)
	r.handled.Add(int64(len(ups)))
	r.handledSeq.Store(last)
	if len(r.queue) == 0 && r.behind.CompareAndSwap(true, false) {
		// Only the episodes whose start was logged get an end line: a
		// handler that flaps costs a line per LogEvery, not per episode.
		if n := r.episode.Swap(0); r.warned.Swap(false) {
			r.cfg.Logger.Info("handler caught up", "dropped", n, "dropped_total", r.dropped.Load())
		}
	}
}

// call runs f, turning a panic into a counted, logged (rate-limited, with
// the stack) report.
func (r *HandlerRunner) call(f func(), what string, first, last int64) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		n := r.panics.Add(1)
		if suppressed, ok := r.panicLog.allow(time.Now()); ok {
			args := []any{"call", what, "panic", fmt.Sprint(v), "panics_total", n, "stack", string(debug.Stack())}
			if last > 0 {
				args = append(args, "first_seq", first, "last_seq", last)
			}
			if suppressed > 0 {
				args = append(args, "suppressed_since_last", suppressed)
			}
			r.cfg.Logger.Error("handler panicked; the server goes on, this batch is lost to this handler", args...)
		}
	}()
	f()
}

func (r *HandlerRunner) dropQueued() {
	for {
		select {
		case q, ok := <-r.queue:
			if !ok {
				return
			}
			r.dropped.Add(int64(len(q.c.Updates)))
		default:
			return
		}
	}
}

func (r *HandlerRunner) closeHandler() {
	r.closeOnce.Do(func() {
		c, ok := r.cfg.Handler.(Closer)
		if !ok {
			return
		}
		var err error
		r.call(func() { err = c.Close() }, "Close", 0, 0)
		if err != nil {
			r.cfg.Logger.Error("handler close failed", "err", err)
		}
	})
}

// Abandon makes the runner stop delivering: the goroutine drops what is
// queued (counting it) after the OnCommit call in progress, if any,
// returns, then closes the handler. Safe to call more than once.
func (r *HandlerRunner) Abandon() {
	r.abandonMu.Do(func() { close(r.abandon) })
}

// Release closes the handler of a runner that was never spawned (so Done
// is closed too). On a runner that was, it does nothing: the goroutine
// closes the handler when it ends.
func (r *HandlerRunner) Release() {
	r.startOnce.Do(func() {
		r.closeHandler()
		close(r.done)
	})
}

// Done is closed when the runner's goroutine has ended and the handler is
// closed (or, for a runner never spawned, after Release).
func (r *HandlerRunner) Done() <-chan struct{} { return r.done }

func (r *HandlerRunner) busy() time.Duration {
	if since := r.busySince.Load(); since != 0 {
		return time.Since(time.Unix(0, since))
	}
	return 0
}

// Status returns what the runner knows about its handler now.
func (r *HandlerRunner) Status() HandlerStatus {
	lag := r.committedSeq.Load() - r.handledSeq.Load()
	if r.committedSeq.Load() == 0 {
		lag = 0
	}
	return HandlerStatus{
		Name: r.cfg.Name, Queued: len(r.queue), QueueCap: cap(r.queue), Lag: max(lag, 0),
		Handled: r.handled.Load(), Dropped: r.dropped.Load(), Panics: r.panics.Load(), Busy: r.busy(),
	}
}

// copyUpdates copies updates and every byte they reference into one new
// buffer. Each slice is capped at its length, so appending to one
// reallocates instead of overwriting its neighbour.
func copyUpdates(src []Update) []Update {
	size := 0
	for i := range src {
		m := &src[i].Msg
		size += len(m.Key) + len(m.UUID) + len(m.Props) + len(m.Body)
	}
	buf := make([]byte, 0, size)
	take := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	out := make([]Update, len(src))
	for i, u := range src {
		u.Msg.Key, u.Msg.UUID, u.Msg.Props, u.Msg.Body = take(u.Msg.Key), take(u.Msg.UUID), take(u.Msg.Props), take(u.Msg.Body)
		out[i] = u
	}
	return out
}

// rateLimit lets one event through per interval and counts the others.
type rateLimit struct {
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int64
}

// allow reports whether to log now, and how many were held back since the
// last one let through.
func (l *rateLimit) allow(now time.Time) (suppressed int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	l.last, suppressed, l.suppressed = now, l.suppressed, 0
	return suppressed, true
}
