// Package server wires clonekv's actors and socket adapters into a Clone
// server (the ZeroMQ Guide's Model Five, over protoactor and libzmq):
//
//	srv, err := server.New(server.Config{Port: 5556})
//	if err != nil { ... }          // a port in use, a bad option, a handler that failed to open
//	err = srv.Run(ctx)             // serves until ctx is done, then shuts down gracefully
//
// New binds the three sockets and opens the handlers, so configuration and
// bind errors surface before anything runs. Run spawns the actors and serves.
// Shutdown(ctx) stops the server gracefully within ctx (stop taking input,
// publish and hand to the handlers every update already accepted, close
// everything), as net/http's Server.Shutdown does; Close stops it now. Run's
// ctx ending is a Shutdown bounded by Config.ShutdownTimeout.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
	"github.com/clonekv/clonekv/transport/adapter"
)

// ErrServerClosed is what Run returns when Shutdown or Close stopped the
// server (not Run's own context), and what Run returns on a server already
// stopped.
var ErrServerClosed = errors.New("clonekv server: closed")

// Server is one clone server. Create it with New, run it with Run, stop it
// with Shutdown or Close (or by ending Run's context).
type Server struct {
	cfg   Config
	log   *slog.Logger
	port  int
	stats *stats.Server

	zctx      *zmq.Context
	router    *zmq.Socket
	pub       *zmq.Socket
	collector *zmq.Socket
	guards    *guards // ZAP handler (CURVE) and socket monitor: curve.go, monitor.go
	handlers  []*actors.HandlerRunner

	// mu guards the lifecycle: which of new → running → stopping the server
	// is in, and what Run started (written under mu before running).
	node    atomic.Pointer[raftlog.Node] // the open log, for History
	mu      sync.Mutex
	ran     bool
	running bool
	sys     *actor.ActorSystem
	pids    *pids

	ready     chan struct{} // closed once Run serves
	stopping  chan struct{} // closed when a stop begins
	stopOnce  sync.Once
	hurry     chan struct{} // closed to make the stop give up draining
	hurryOnce sync.Once
	stopped   chan struct{} // closed when everything is released
	stopErr   error         // written before stopped closes
}

// New validates cfg, creates the ZeroMQ context, binds the snapshot,
// publisher and collector sockets and opens the handlers (actors.Opener).
// On any error it releases everything it had started.
func New(cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("clonekv server config: %w", err)
	}
	s := &Server{
		cfg: c, log: c.Logger, stats: &stats.Server{},
		ready: make(chan struct{}), stopping: make(chan struct{}), hurry: make(chan struct{}), stopped: make(chan struct{}),
	}
	if s.zctx, err = zmq.NewContext(); err != nil {
		return nil, fmt.Errorf("zmq context: %w", err)
	}
	if s.guards, err = newGuards(s.zctx, c.Curve, s.log, s.stats); err != nil {
		s.zctx.Term()
		return nil, err
	}
	if err := s.bind(); err != nil {
		s.guards.close()
		s.zctx.Term()
		return nil, err
	}
	if err := s.guards.watch(s.zctx, []string{"snapshot", "publisher", "collector"},
		[]*zmq.Socket{s.router, s.pub, s.collector}); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.openHandlers(); err != nil {
		s.Close() // closes the handlers opened so far too
		return nil, err
	}
	return s, nil
}

// openHandlers opens each handler, in order, and makes its runner. The
// runners made so far are in s.handlers when one fails, so that Close
// closes those handlers.
func (s *Server) openHandlers() error {
	for _, h := range s.cfg.Handlers {
		if o, ok := h.Handler.(actors.Opener); ok {
			if err := o.Open(); err != nil {
				return fmt.Errorf("open handler %q: %w", h.Name, err)
			}
		}
		s.handlers = append(s.handlers, actors.NewHandlerRunner(actors.HandlerConfig{
			Name: h.Name, Handler: h.Handler, Queue: h.Queue, Logger: s.log,
		}))
	}
	return nil
}

// Port returns the base port P the server is bound to.
func (s *Server) Port() int { return s.port }

// Stats returns the server's live counters.
func (s *Server) Stats() *stats.Server { return s.stats }

// Peers returns the connections of each server socket, as the socket
// monitor saw them.
func (s *Server) Peers() []SocketPeers { return s.guards.Peers() }

// Handlers returns the status of each registered handler (queue, lag,
// drops, panics), in registration order.
func (s *Server) Handlers() []actors.HandlerStatus {
	out := make([]actors.HandlerStatus, len(s.handlers))
	for i, h := range s.handlers {
		out[i] = h.Status()
	}
	return out
}

// History returns the id of the history the server serves (README
// "Durability"): "" before Run has opened the log and until the log has
// named it. Safe from any goroutine.
func (s *Server) History() string {
	if n := s.node.Load(); n != nil {
		return n.History()
	}
	return ""
}

// Ready is closed once Run has spawned every actor and the server serves.
func (s *Server) Ready() <-chan struct{} { return s.ready }

func (s *Server) endpoint(port int) string { return transport.Endpoint(s.cfg.Bind, port) }

// bind binds the snapshot, publisher and collector sockets at P, P+1, P+2,
// choosing P when it is 0.
func (s *Server) bind() error {
	collectorType := zmq.PULL
	var subscribe []string
	if s.cfg.Collector == CollectorSub {
		collectorType, subscribe = zmq.SUB, []string{""}
	}
	curve := s.cfg.Curve.curveServer()
	socks, port, err := transport.BindPorts(s.zctx, s.cfg.Bind, s.cfg.Port, []transport.PortSpec{
		{Type: zmq.ROUTER, Offset: 0, Options: transport.Options{
			CurveServer: curve, SndHWM: s.cfg.RouterHWM, SndBuf: s.cfg.RouterSndBuf, Mandatory: true, Heartbeat: s.cfg.heartbeat(),
			MaxMsgSize: int64(4*s.cfg.Limits.MaxKey + 1<<16),
		}},
		{Type: zmq.PUB, Offset: 1, Options: transport.Options{
			CurveServer: curve, SndHWM: s.cfg.PubHWM, Linger: s.cfg.PubLinger, Heartbeat: s.cfg.heartbeat(),
		}},
		// A frame far beyond the body limit disconnects its sender rather
		// than being buffered whole; anything up to it is received, then
		// rejected and counted by the collector.
		{Type: collectorType, Offset: 2, Options: transport.Options{
			CurveServer: curve, RcvHWM: s.cfg.CollectorHWM, Subscribe: subscribe, Heartbeat: s.cfg.heartbeat(),
			MaxMsgSize: s.cfg.maxCollectorFrame(),
		}},
	})
	if err != nil {
		return fmt.Errorf("bind snapshot, publisher and collector sockets: %w", err)
	}
	s.router, s.pub, s.collector, s.port = socks[0], socks[1], socks[2], port
	return nil
}

// pids are the spawned actors. Once a socket's adapter is spawned, the
// adapter owns the socket (and closes it when it stops).
type pids struct {
	watch                                                         *actor.PID // the stopWatch (stop.go)
	reader, router, heartbeat, reaper, collector, snapshot, store *actor.PID
	publisher, writer                                             *actor.PID
	handlers                                                      []*actor.PID
	proposer                                                      *actor.PID
	node                                                          *raftlog.Node
	ownsRouter, ownsPub, ownsCollector, ownsHandlers              bool
}

// Run serves until ctx is done, then shuts down gracefully (Shutdown with
// a context bounded by Config.ShutdownTimeout) and returns Shutdown's
// error: nil when everything accepted was published and handed to the
// handlers in time. If Shutdown or Close stop the server instead, Run
// returns ErrServerClosed once the server is released. Run may be called
// once; on a server already stopped it returns ErrServerClosed.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.ran:
		s.mu.Unlock()
		return errors.New("clonekv server: Run called twice")
	case s.isStopping():
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.ran = true
	err := s.start()
	if err != nil {
		s.mu.Unlock()
		s.hurryUp()
		s.beginStop()
		<-s.stopped
		return err
	}
	s.running = true
	s.mu.Unlock()

	s.log.Info("clonekv server listening",
		"snapshot", s.endpoint(s.port), "publisher", s.endpoint(s.port+1),
		"collector", s.endpoint(s.port+2), "collector_type", s.cfg.Collector)
	if s.cfg.Curve != nil {
		pub, _ := s.cfg.Curve.PublicKey()
		s.log.Info("CURVE on", "server_public_key", pub, "allowed_clients", len(s.cfg.Curve.AllowedClients))
	}
	close(s.ready)

	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		err := s.Shutdown(sctx)
		<-s.stopped // after the deadline the rest is quick: actors stopped, nothing waited for
		return err
	case <-s.stopping:
		<-s.stopped
		return ErrServerClosed
	}
}

func (s *Server) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// Shutdown stops the server gracefully: it stops reading client updates and
// snapshot requests, lets the store apply, the publisher publish and the
// handlers handle every update already accepted, flushes the publisher
// socket (its linger, Config.PubLinger), stops every actor and closes every
// socket. It returns nil once all that is done, or ctx's error as soon as
// ctx ends: from then on the server stops at once, dropping what is still
// queued (a handler stuck in OnCommit is left to return on its own; it gets
// nothing more). Shutdown may be called at any time, more than once, also
// before Run and concurrently with Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginStop()
	select {
	case <-s.stopped:
		return s.stopErr
	case <-ctx.Done():
		s.hurryUp()
		return fmt.Errorf("clonekv server shutdown: %w", ctx.Err())
	}
}

// Close stops the server now, at any time (before, during or after Run):
// actors stop after the message they are handling, queued updates and
// handler batches are dropped, sockets close. It returns once everything is
// released; the publisher's linger (Config.PubLinger) bounds how long
// ZeroMQ still tries to flush to subscribers.
func (s *Server) Close() error {
	s.beginStop()
	s.hurryUp()
	<-s.stopped
	return s.stopErr
}

// beginStop starts the stop, once, on a goroutine the server owns (Shutdown
// and Close wait for it through s.stopped).
func (s *Server) beginStop() {
	s.stopOnce.Do(func() {
		s.mu.Lock() // waits for a Run that is starting
		close(s.stopping)
		s.mu.Unlock()
		go s.stop()
	})
}

func (s *Server) hurryUp() { s.hurryOnce.Do(func() { close(s.hurry) }) }

func (s *Server) hurried() bool {
	select {
	case <-s.hurry:
		return true
	default:
		return false
	}
}

// start creates the actor system and spawns the actors (under s.mu). On an
// error, what it started is in s.sys and s.pids for stop to release.
func (s *Server) start() error {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(minLevel{slog.LevelWarn, s.log.Handler()}).With("lib", "protoactor")
	}))
	sys.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*actor.SupervisorEvent); ok {
			s.log.Error("actor failed and was resumed", "actor", e.Child.Id, "reason", fmt.Sprint(e.Reason))
		}
	})
	s.sys, s.pids = sys, &pids{}
	s.guards.start()
	return s.spawn(sys, s.pids)
}

func (s *Server) spawn(sys *actor.ActorSystem, p *pids) error {
	root := sys.Root
	var firstErr error
	spawn := func(name string, props *actor.Props) *actor.PID {
		if firstErr != nil {
			return nil
		}
		pid, err := root.SpawnNamed(props, name)
		if err != nil {
			firstErr = fmt.Errorf("spawn %s: %w", name, err)
			return nil
		}
		return pid
	}
	resume := actor.WithGuardian(actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.ResumeDirective }))
	rejects := &stats.RejectLog{Stats: s.stats, Logger: s.log}
	storeName := "store"
	storePID := sys.NewLocalPID(storeName)

	p.watch = spawn("stop-watch", actor.PropsFromProducer(newStopWatch))
	p.writer = spawn("pub-writer", adapter.NewWriter(adapter.WriterConfig{Socket: s.pub, Logger: s.log}).Props())
	p.ownsPub = p.writer != nil
	p.publisher = spawn("publisher", actor.PropsFromProducer(func() actor.Actor {
		return actors.NewPublisher(actors.PublisherConfig{Writer: p.writer, Stats: s.stats, Resume: s.cfg.ResumeWindow > 0})
	}, resume))
	proposals := &actors.Proposals{}
	// Writes at any node: the proposer forwards to the leader's collector
	// (its child, the forwarder) while another node leads, and dedupes
	// UUIDs against what it proposed and what the store applied (the store
	// feeds it Committed, below, when the window is on).
	forwarder := actors.NewForwarder(actors.ForwarderConfig{Context: s.zctx, Sub: s.cfg.Collector == CollectorSub,
		MaxQueue: s.cfg.ForwardQueue, MaxQueueBytes: s.cfg.ForwardQueueBytes, Stats: s.stats, Logger: s.log})
	dedupe := s.cfg.DedupeWindow
	if dedupe == 0 && s.cfg.Cluster == nil {
		dedupe = -1 // a single node gets no copies from other nodes: dedupe only when asked
	}
	p.proposer = spawn("proposer", actor.PropsFromProducer(func() actor.Actor {
		return actors.NewProposer(actors.ProposerConfig{Proposals: proposals, Stats: s.stats, Logger: s.log,
			Forwarder: forwarder, Store: storePID, DedupeWindow: dedupe, DedupeAge: s.cfg.DedupeAge})
	}, resume))
	// Expiries draw on the collector's credits (one batch at a time) and at
	// most ExpiryRate keys/s: see actors.DefaultExpiryRate.
	credits := adapter.NewCredits(s.cfg.Credits)
	reaper := &actors.Reaper{Proposer: p.proposer, Interval: s.cfg.ReapInterval, Credits: credits, Rate: s.cfg.ExpiryRate, Stats: s.stats}
	p.reaper = spawn("reaper", actor.PropsFromProducer(func() actor.Actor { return reaper }, resume))
	for _, h := range s.handlers {
		p.handlers = append(p.handlers, spawn("handler-"+h.Name(), h.Props()))
	}
	p.ownsHandlers = firstErr == nil
	// The store's followers: the reaper, then the extensions. Adding a
	// built-in follower is one line here.
	followers := []*actor.PID{p.reaper}
	if dedupe >= 0 {
		// The dedupe window learns what the store applied; without one
		// the proposer would only drop each batch.
		followers = append(followers, p.proposer)
	}
	followers = append(followers, p.handlers...)
	store := actors.NewStore(actors.StoreConfig{Publisher: p.publisher, Handlers: followers, Stats: s.stats, Proposals: proposals,
		Capacity: &actors.Capacity{MaxKeys: s.cfg.MaxKeys, MaxBytes: s.cfg.MaxBytes, Log: rejects}, Window: max(s.cfg.ResumeWindow, 0)})
	p.store = spawn(storeName, actor.PropsFromProducer(func() actor.Actor { return store }, resume))
	if firstErr == nil && !p.store.Equal(storePID) {
		firstErr = fmt.Errorf("store spawned as %v, want %v", p.store, storePID)
	}
	// The log replays into the store before any input is read.
	if firstErr == nil {
		p.node, firstErr = s.openLog(root, p)
		if p.node != nil {
			s.node.Store(p.node)
		}
	}
	p.collector = spawn("collector", actor.PropsFromProducer(func() actor.Actor {
		return actors.NewCollector(actors.CollectorConfig{Proposer: p.proposer, Limits: s.cfg.Limits, Stats: s.stats, Log: rejects})
	}, resume))
	snapshot := actors.NewSnapshot(actors.SnapshotConfig{
		Store: storePID, Stats: s.stats, Log: rejects, Logger: s.log, MaxSubtree: s.cfg.Limits.MaxKey,
		Router: sys.NewLocalPID("router"), MaxStreams: s.cfg.MaxStreams, MaxWaiting: s.cfg.MaxWaiting,
		MaxWaitingPerPeer: s.cfg.MaxWaitingPerPeer, Deadline: s.cfg.SnapshotDeadline, Resume: s.cfg.ResumeWindow > 0,
		AheadWait: s.cfg.Cluster.aheadWait(),
	})
	p.snapshot = spawn("snapshot", actor.PropsFromProducer(func() actor.Actor { return snapshot }, resume))
	if firstErr == nil {
		// Its wake-up pipe is only closed by the actor's Stopping: make it
		// only when it will be spawned.
		router, err := adapter.NewRouter(adapter.RouterConfig{Socket: s.router, Context: s.zctx, Target: p.snapshot, Logger: s.log})
		if err != nil {
			firstErr = fmt.Errorf("snapshot router: %w", err)
		} else {
			p.router = spawn("router", router.Props())
			p.ownsRouter = p.router != nil
		}
	}
	p.reader = spawn("collector-reader", adapter.NewReader(adapter.ReaderConfig{
		Socket: s.collector, Target: p.collector, Credits: credits,
		BatchMax: s.cfg.BatchMax, BatchBytes: batchBytes(s.cfg.Credits), Logger: s.log,
	}).Props())
	p.ownsCollector = p.reader != nil
	if s.cfg.Heartbeat > 0 {
		p.heartbeat = spawn("heartbeat", actor.PropsFromProducer(func() actor.Actor {
			return &actors.HeartbeatSender{Publisher: p.publisher, Interval: s.cfg.Heartbeat}
		}))
	}
	return firstErr
}

// stop releases everything the server started, in the order that lets
// what was accepted flow out: inputs first, then the pipeline in order,
// then the publisher socket, the actor system and the ZeroMQ context. Each
// wait gives up once hurried (Close, or Shutdown's ctx ended).
func (s *Server) stop() {
	start := time.Now()
	var errs []error
	if s.sys == nil { // never ran: New's sockets and handlers only
		s.closeSockets(&pids{})
		for _, h := range s.handlers {
			h.Release()
		}
		s.guards.close()
		if err := s.zctx.Term(); err != nil {
			errs = append(errs, fmt.Errorf("zmq context term: %w", err))
		}
		s.stopErr = errors.Join(errs...)
		close(s.stopped)
		return
	}

	p := s.pids
	st := &stopper{root: s.sys.Root, watch: p.watch, hurry: s.hurry}
	// 1. No new input: the collector reader (its socket closes), the
	//    snapshot router, the timers.
	st.stop(p.reader, p.router, p.heartbeat, p.reaper)
	// 2. Drain the pipeline in order: every batch the collector holds goes
	//    to the proposer and through the log (which then stops) to the
	//    store.
	st.stop(p.collector)
	s.drainLog(s.sys.Root, p)
	st.stop(p.proposer, p.snapshot)
	st.stop(p.store)
	st.stop(p.publisher)
	// 3. The writer writes what it holds and closes the PUB with its
	//    linger; the handler runners close their queues.
	st.stop(append([]*actor.PID{p.writer}, p.handlers...)...)
	abandoned := s.drainHandlers(p.ownsHandlers)
	if p.watch != nil {
		s.sys.Root.Stop(p.watch)
	}
	s.sys.Shutdown()
	s.closeSockets(p)
	if len(st.stuck) > 0 {
		// An actor that did not stop may still hold its socket: Term would
		// wait for it for ever. Leave the context (and the monitor) be.
		errs = append(errs, fmt.Errorf("clonekv server: actors %v did not stop; ZeroMQ context left open", st.stuck))
	} else {
		if err := s.zctx.Term(); err != nil {
			errs = append(errs, fmt.Errorf("zmq context term: %w", err))
		}
		s.guards.wait()
	}
	if len(abandoned) > 0 {
		s.log.Warn("handlers still busy when the shutdown deadline passed; their goroutines end when OnCommit returns",
			"handlers", abandoned)
	}
	s.stopErr = errors.Join(errs...)
	if s.running {
		s.log.Info("clonekv server stopped", "sequence", s.stats.Sequence.Load(),
			"published", s.stats.UpdatesPublished.Load(), "drained", !s.hurried(),
			"shutdown", time.Since(start).Round(time.Millisecond))
	}
	close(s.stopped)
}

// drainHandlers waits for every handler runner to deliver what it holds and
// close its handler. Once hurried it abandons them, waits (at most
// hurryBound) for those between two batches, and returns the names of
// those still inside a call.
func (s *Server) drainHandlers(spawned bool) []string {
	if !spawned {
		for _, h := range s.handlers {
			h.Release() // no-op for a runner that was spawned
		}
	}
	for _, h := range s.handlers {
		select {
		case <-h.Done():
			continue
		case <-s.hurry:
		}
		break
	}
	var busy []string
	if s.hurried() {
		for _, h := range s.handlers {
			h.Abandon()
		}
		// Those between two batches end at once; one inside a call is not
		// waited for (it may never return).
		grace := time.After(hurryBound)
		for _, h := range s.handlers {
			if h.Status().Busy > 0 {
				busy = append(busy, h.Name())
				continue
			}
			select {
			case <-h.Done():
			case <-grace:
				busy = append(busy, h.Name())
			}
		}
	}
	return busy
}

// closeSockets closes the server sockets no adapter took over (an error
// half-way through spawn, or a server never run).
func (s *Server) closeSockets(p *pids) {
	if !p.ownsRouter {
		s.router.Close()
	}
	if !p.ownsPub {
		s.pub.Close()
	}
	if !p.ownsCollector {
		s.collector.Close()
	}
}

// minLevel drops records below a level (the actor library logs chatter at
// Info that we only want at Warn and above).
type minLevel struct {
	min slog.Level
	h   slog.Handler
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler            { return minLevel{m.min, m.h.WithAttrs(a)} }
func (m minLevel) WithGroup(g string) slog.Handler                 { return minLevel{m.min, m.h.WithGroup(g)} }

// batchBytes bounds the bytes of one collector batch so that the credits
// bound bytes as well as batches: Credits batches of at most batchBytes
// plus one message each stay under the proposer's queue bound
// (actors.DefaultProposerQueueBytes), where everything accepted and not
// yet in the log waits. The reader then stops reading before the proposer
// would have to shed: the collector's receive queue fills and ZeroMQ
// pushes back on the clients.
func batchBytes(credits int) int {
	return max(64<<10, actors.DefaultProposerQueueBytes/(2*max(credits, 1)))
}
