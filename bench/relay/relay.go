package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// Config configures a Server. The zero value binds 127.0.0.1 at free ports.
type Config struct {
	// Bind is the interface address to bind; "" means "127.0.0.1" and "*"
	// means all interfaces.
	Bind string
	// Port is the base port P: the relay binds PUB at P+1 and PULL at P+2
	// (P is not bound: the relay has no snapshot socket).
	// Zero picks a random P with P+1 and P+2 free.
	Port int
	// Logger receives the few log lines the relay writes; nil discards them.
	Logger *slog.Logger
}

// Server is the relay: it forwards updates from its PULL socket to its PUB
// socket. Create it with New and run it once with Run; Run owns the sockets
// from then on and closes them when it returns.
type Server struct {
	log  *slog.Logger
	port int

	zctx *zmq.Context
	pub  *zmq.Socket // PUB at P+1
	pull *zmq.Socket // PULL at P+2

	started            atomic.Bool
	forwarded, dropped atomic.Int64
}

const (
	pollMax  = 100 * time.Millisecond // bounds one poll, for cancellation
	maxDrain = 4096                   // messages per wakeup before rechecking ctx
)

// New creates the relay's ZeroMQ context and sockets and binds them. A bind
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
		return nil, fmt.Errorf("relay: new zmq context: %w", err)
	}
	socks, port, err := transport.BindPorts(zctx, host, cfg.Port, []transport.PortSpec{
		{Type: zmq.PUB, Offset: 1}, {Type: zmq.PULL, Offset: 2},
	})
	if err != nil {
		_ = zctx.Term()
		return nil, fmt.Errorf("relay: %w", err)
	}
	return &Server{
		log:  log.With("component", "relay", "port", port),
		port: port,
		zctx: zctx,
		pub:  socks[0],
		pull: socks[1],
	}, nil
}

// Port returns the base port P; the relay listens at P+1 and P+2.
func (r *Server) Port() int { return r.port }

// Forwarded returns how many messages have been published.
func (r *Server) Forwarded() int64 { return r.forwarded.Load() }

// Dropped returns how many malformed messages (not five frames) were dropped.
func (r *Server) Dropped() int64 { return r.dropped.Load() }

// Run relays until ctx is done (within about 100 ms), then closes the
// sockets (LINGER 0), terminates the context and returns nil. Run may be
// called only once.
func (r *Server) Run(ctx context.Context) (err error) {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("relay: Run called more than once")
	}
	defer func() { err = errors.Join(err, r.close()) }()

	poller := zmq.NewPoller()
	poller.Add(r.pull, zmq.POLLIN)
	frames := make([][]byte, 0, kvmsg.NumFrames+1)
	seqFrame := make([]byte, kvmsg.SeqLen) // zmq_send copies, so one buffer serves all
	var seq int64
	r.log.Info("relay running")
	for ctx.Err() == nil {
		polled, err := poller.Poll(pollMax)
		if err != nil {
			return fmt.Errorf("relay: poll: %w", err)
		}
		if len(polled) == 0 {
			continue
		}
		for range maxDrain {
			frames, _, err = transport.RecvMessage(r.pull, zmq.DONTWAIT, frames)
			if err != nil {
				if zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) {
					break
				}
				return fmt.Errorf("relay: receive: %w", err)
			}
			if len(frames) != kvmsg.NumFrames {
				r.dropped.Add(1)
				continue
			}
			seq++
			binary.BigEndian.PutUint64(seqFrame, uint64(seq))
			frames[kvmsg.FrameSeq] = seqFrame
			if err := transport.SendMessage(r.pub, frames, 0); err != nil {
				return fmt.Errorf("relay: publish %d: %w", seq, err)
			}
			r.forwarded.Add(1)
		}
	}
	r.log.Info("relay stopping", "forwarded", seq, "dropped", r.dropped.Load())
	return nil
}

// close closes the sockets and terminates the context.
func (r *Server) close() error {
	errs := []error{r.pub.Close(), r.pull.Close()}
	if err := r.zctx.Term(); err != nil {
		errs = append(errs, fmt.Errorf("relay: term context: %w", err))
	}
	return errors.Join(errs...)
}
