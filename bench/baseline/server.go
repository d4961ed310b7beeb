package baseline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// Config configures a Server. The zero value binds 127.0.0.1 at a free port
// triple.
type Config struct {
	// Bind is the interface address to bind; "" means "127.0.0.1" and "*"
	// means all interfaces.
	Bind string
	// Port is the base port P; the server binds P, P+1 and P+2. Zero picks a
	// free consecutive triple by trying random ports.
	Port int
	// Logger receives the few log lines the server writes; nil discards them.
	Logger *slog.Logger
}

// Stats are counters a Server keeps; they may be read while it runs.
type Stats struct {
	Updates   int64 // client updates sequenced and published
	Expired   int64 // keys deleted by the ttl scan
	Snapshots int64 // snapshot requests answered
	Bad       int64 // malformed requests and updates ignored
}

// Server is the seed-design Clone server. Create it with New and run it once
// with Run; Run owns the sockets from then on and closes them when it
// returns. (A Server that is never run keeps its sockets until exit.)
type Server struct {
	log  *slog.Logger
	port int

	zctx      *zmq.Context
	snapshot  *zmq.Socket // ROUTER at P
	publisher *zmq.Socket // PUB at P+1
	collector *zmq.Socket // PULL at P+2

	// State owned by the Run goroutine.
	kvmap    map[string]kvmsg.Msg
	sequence int64
	frames   [][]byte // receive buffer, reused

	started                              atomic.Bool
	updates, expired, snapshots, badMsgs atomic.Int64
}

// pollMax bounds one poll so that Run notices cancellation promptly.
const pollMax = 100 * time.Millisecond

// flushInterval is the seed's ttl timer period.
const flushInterval = time.Second

// New creates the server's ZeroMQ context and sockets and binds them. A bind
// failure is reported with the endpoint that failed.
func New(cfg Config) (*Server, error) {
	host := cfg.Bind
	if host == "" {
		host = "127.0.0.1"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("baseline: new zmq context: %w", err)
	}
	// Default socket options but LINGER 0, as the seed's sockets.
	socks, port, err := transport.BindPorts(zctx, host, cfg.Port, []transport.PortSpec{
		{Type: zmq.ROUTER, Offset: 0}, {Type: zmq.PUB, Offset: 1}, {Type: zmq.PULL, Offset: 2},
	})
	if err != nil {
		_ = zctx.Term()
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return &Server{
		log:       log.With("component", "baseline", "port", port),
		port:      port,
		zctx:      zctx,
		snapshot:  socks[0],
		publisher: socks[1],
		collector: socks[2],
		kvmap:     make(map[string]kvmsg.Msg),
		frames:    make([][]byte, 0, kvmsg.NumFrames+1),
	}, nil
}

// Port returns the base port P the server is bound at.
func (s *Server) Port() int { return s.port }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Updates:   s.updates.Load(),
		Expired:   s.expired.Load(),
		Snapshots: s.snapshots.Load(),
		Bad:       s.badMsgs.Load(),
	}
}

// Run is the reactor: it serves snapshot requests and client updates and
// scans for expired keys once a second, until ctx is done (within about
// 100 ms). It then closes the sockets (LINGER 0) and terminates the context,
// and returns nil. Run may be called only once.
func (s *Server) Run(ctx context.Context) (err error) {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("baseline: Run called more than once")
	}
	defer func() { err = errors.Join(err, s.close()) }()

	poller := zmq.NewPoller()
	poller.Add(s.snapshot, zmq.POLLIN)
	poller.Add(s.collector, zmq.POLLIN)
	s.log.Info("baseline server running")
	nextFlush := time.Now().Add(flushInterval)
	for ctx.Err() == nil {
		wait := min(max(time.Until(nextFlush), 0), pollMax)
		polled, err := poller.PollAll(wait)
		if err != nil {
			return fmt.Errorf("baseline: poll: %w", err)
		}
		// One message per ready socket per wakeup, as zloop does.
		if polled[0].Events&zmq.POLLIN != 0 {
			if err := s.handleSnapshot(); err != nil {
				return err
			}
		}
		if polled[1].Events&zmq.POLLIN != 0 {
			if err := s.handleCollector(); err != nil {
				return err
			}
		}
		if now := time.Now(); !now.Before(nextFlush) {
			if err := s.flushTTL(now); err != nil {
				return err
			}
			nextFlush = now.Add(flushInterval)
		}
	}
	s.log.Info("baseline server stopping", "sequence", s.sequence, "keys", len(s.kvmap))
	return nil
}

// close closes the sockets and terminates the context.
func (s *Server) close() error {
	var errs []error
	for _, sock := range []*zmq.Socket{s.snapshot, s.publisher, s.collector} {
		if err := sock.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.zctx.Term(); err != nil {
		errs = append(errs, fmt.Errorf("baseline: term context: %w", err))
	}
	return errors.Join(errs...)
}
