// Package server wires clonekv's actors and socket adapters into a Clone
// server (the ZeroMQ Guide's Model Five, over protoactor and libzmq):
//
//	srv, err := server.New(server.Config{Port: 5556})
//	if err != nil { ... }          // a port in use, a bad option
//	err = srv.Run(ctx)             // serves until ctx is done, then stops gracefully
//
// New binds the three sockets, so configuration and bind errors surface
// before anything runs. Run spawns the actors and, when ctx ends, stops
// taking input, publishes every update it accepted, and closes everything.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
	"github.com/clonekv/clonekv/transport/adapter"
)

// Server is one clone server. Create it with New, run it with Run.
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

	runOnce sync.Once
	ready   chan struct{}
}

// New validates cfg, creates the ZeroMQ context and binds the snapshot,
// publisher and collector sockets.
func New(cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("clonekv server config: %w", err)
	}
	s := &Server{cfg: c, log: c.Logger, stats: &stats.Server{}, ready: make(chan struct{})}
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
	return s, nil
}

// Close releases the sockets of a server that will not be Run. After Run
// has been called it does nothing (Run cleans up when its context ends).
func (s *Server) Close() error {
	closed := false
	s.runOnce.Do(func() {
		closed = true
		s.router.Close()
		s.pub.Close()
		s.collector.Close()
		s.guards.close()
	})
	if !closed {
		return nil
	}
	if err := s.zctx.Term(); err != nil {
		return fmt.Errorf("zmq context term: %w", err)
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
			CurveServer: curve, SndHWM: s.cfg.RouterHWM, Mandatory: true,
			MaxMsgSize: int64(4*s.cfg.Limits.MaxKey + 1<<16),
		}},
		{Type: zmq.PUB, Offset: 1, Options: transport.Options{
			CurveServer: curve, SndHWM: s.cfg.PubHWM, Linger: s.cfg.PubLinger,
		}},
		// A frame far beyond the body limit disconnects its sender rather
		// than being buffered whole; anything up to it is received, then
		// rejected and counted by the collector.
		{Type: collectorType, Offset: 2, Options: transport.Options{
			CurveServer: curve, RcvHWM: s.cfg.CollectorHWM, Subscribe: subscribe,
			MaxMsgSize: int64(4*s.cfg.Limits.MaxBody + 1<<20),
		}},
	})
	if err != nil {
		return fmt.Errorf("bind snapshot, publisher and collector sockets: %w", err)
	}
	s.router, s.pub, s.collector, s.port = socks[0], socks[1], socks[2], port
	return nil
}

// pids are the spawned actors, in the order they are stopped.
type pids struct {
	reader, router, heartbeat, reaper, collector, snapshot, store, publisher *actor.PID
	handlers                                                                 []*actor.PID
	writer                                                                   *actor.PID
	proposer                                                                 *actor.PID
	node                                                                     *raftlog.Node
}

// Run serves until ctx is done, then shuts down gracefully: it stops
// reading client updates and snapshot requests, lets the store apply and the
// publisher publish every update already accepted, closes the publisher with
// its linger so they reach subscribers, and returns. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	err := errors.New("clonekv server: Run called twice")
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Server) run(ctx context.Context) error {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(minLevel{slog.LevelWarn, s.log.Handler()}).With("lib", "protoactor")
	}))
	sub := sys.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*actor.SupervisorEvent); ok {
			s.log.Error("actor failed and was resumed", "actor", e.Child.Id, "reason", fmt.Sprint(e.Reason))
		}
	})
	defer sys.EventStream.Unsubscribe(sub)

	s.guards.start()
	p, err := s.spawn(sys)
	if err != nil {
		return err
	}
	s.log.Info("clonekv server listening",
		"snapshot", s.endpoint(s.port), "publisher", s.endpoint(s.port+1),
		"collector", s.endpoint(s.port+2), "collector_type", s.cfg.Collector)
	if s.cfg.Curve != nil {
		pub, _ := s.cfg.Curve.PublicKey()
		s.log.Info("CURVE on", "server_public_key", pub, "allowed_clients", len(s.cfg.Curve.AllowedClients))
	}
	close(s.ready)

	<-ctx.Done()
	start := time.Now()
	s.shutdown(sys, p)
	s.log.Info("clonekv server stopped", "sequence", s.stats.Sequence.Load(),
		"published", s.stats.UpdatesPublished.Load(), "shutdown", time.Since(start).Round(time.Millisecond))
	return nil
}

func (s *Server) spawn(sys *actor.ActorSystem) (*pids, error) {
	root := sys.Root
	var p pids
	var firstErr error
	spawn := func(name string, props *actor.Props) *actor.PID {
		pid, err := root.SpawnNamed(props, name)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("spawn %s: %w", name, err)
		}
		return pid
	}
	resume := actor.WithGuardian(actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.ResumeDirective }))
	rejects := &stats.RejectLog{Stats: s.stats, Logger: s.log}
	storeName := "store"
	storePID := sys.NewLocalPID(storeName)

	p.writer = spawn("pub-writer", adapter.NewWriter(adapter.WriterConfig{Socket: s.pub, Logger: s.log}).Props())
	p.publisher = spawn("publisher", actor.PropsFromProducer(func() actor.Actor {
		return actors.NewPublisher(actors.PublisherConfig{Writer: p.writer, Stats: s.stats})
	}, resume))
	proposals := &actors.Proposals{}
	p.proposer = spawn("proposer", actor.PropsFromProducer(func() actor.Actor {
		return actors.NewProposer(actors.ProposerConfig{Proposals: proposals, Stats: s.stats, Logger: s.log})
	}, resume))
	reaper := &actors.Reaper{Proposer: p.proposer, Interval: s.cfg.ReapInterval}
	p.reaper = spawn("reaper", actor.PropsFromProducer(func() actor.Actor { return reaper }, resume))
	for _, h := range s.cfg.Handlers {
		p.handlers = append(p.handlers, spawn(h.Name, h.Props))
	}
	// The handler list: the publisher first (it returns the credits), then
	// the reaper, then extensions. Adding a built-in handler is one line here.
	handlers := append([]*actor.PID{p.publisher, p.reaper}, p.handlers...)
	store := actors.NewStore(actors.StoreConfig{Handlers: handlers, Stats: s.stats, Proposals: proposals})
	p.store = spawn(storeName, actor.PropsFromProducer(func() actor.Actor { return store }, resume))
	if firstErr == nil && !p.store.Equal(storePID) {
		firstErr = fmt.Errorf("store spawned as %v, want %v", p.store, storePID)
	}
	// The log replays into the store before any input is read.
	if firstErr == nil {
		p.node, firstErr = s.openLog(root, &p)
	}
	p.collector = spawn("collector", actor.PropsFromProducer(func() actor.Actor {
		return actors.NewCollector(actors.CollectorConfig{Proposer: p.proposer, Limits: s.cfg.Limits, Stats: s.stats, Log: rejects})
	}, resume))
	snapshot := actors.NewSnapshot(actors.SnapshotConfig{
		Store: p.store, Stats: s.stats, Log: rejects, Logger: s.log, MaxSubtree: s.cfg.Limits.MaxKey,
		Router: sys.NewLocalPID("router"),
	})
	p.snapshot = spawn("snapshot", actor.PropsFromProducer(func() actor.Actor { return snapshot }, resume))
	router, err := adapter.NewRouter(adapter.RouterConfig{Socket: s.router, Context: s.zctx, Target: p.snapshot, Logger: s.log})
	if err != nil {
		return nil, err
	}
	p.router = spawn("router", router.Props())
	p.reader = spawn("collector-reader", adapter.NewReader(adapter.ReaderConfig{
		Socket: s.collector, Target: p.collector, Credits: adapter.NewCredits(s.cfg.Credits),
		BatchMax: s.cfg.BatchMax, Logger: s.log,
	}).Props())
	if s.cfg.Heartbeat > 0 {
		p.heartbeat = spawn("heartbeat", actor.PropsFromProducer(func() actor.Actor {
			return &actors.HeartbeatSender{Publisher: p.publisher, Interval: s.cfg.Heartbeat}
		}))
	}
	if firstErr != nil {
		s.shutdown(sys, &p)
		return nil, firstErr
	}
	return &p, nil
}

// shutdown stops the actors inputs first, so that everything accepted flows
// out before the publisher closes.
func (s *Server) shutdown(sys *actor.ActorSystem, p *pids) {
	root := sys.Root
	stop := func(pid *actor.PID) {
		if pid != nil {
			if err := root.PoisonFuture(pid).Wait(); err != nil {
				s.log.Warn("actor did not stop cleanly", "actor", pid.Id, "err", err)
			}
		}
	}
	// 1. No new input: the collector reader (its socket closes), the
	//    snapshot router, the timers.
	stop(p.reader)
	stop(p.router)
	stop(p.heartbeat)
	stop(p.reaper)
	// 2. Drain the pipeline in order: every batch the collector holds goes
	//    to the proposer and through the log (which then stops) to the
	//    store, every commit to the publisher and handlers.
	stop(p.collector)
	s.drainLog(root, p)
	stop(p.proposer)
	stop(p.snapshot)
	stop(p.store)
	stop(p.publisher)
	for _, h := range p.handlers {
		stop(h)
	}
	// 3. The writer writes what it holds and closes the PUB with linger.
	stop(p.writer)
	sys.Shutdown()
	if err := s.zctx.Term(); err != nil {
		s.log.Warn("zmq context term", "err", err)
	}
	s.guards.wait()
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
