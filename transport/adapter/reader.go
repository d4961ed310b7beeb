package adapter

import (
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
)

// Inbound is a batch of raw messages a Reader received. Done must be called
// exactly once, when the batch has been dealt with, to return its credit.
type Inbound struct {
	Msgs   [][][]byte // each message's frames (at most transport.MaxFrames kept)
	Counts []int      // each message's real frame count (may exceed len(Msgs[i]))
	Done   func()
}

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	Socket   *zmq.Socket // bound or connected; the Reader owns it from now on
	Target   *actor.PID  // receives *Inbound
	Credits  *Credits    // bounds batches in flight; required
	BatchMax int         // messages per batch; default 64
	// BatchBytes, when positive, also ends a batch once its frames hold
	// this many bytes (a batch still takes at least one message), so that
	// Credits bound bytes in flight as well as batches.
	BatchBytes   int
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Reader is the socket adapter for a socket that is only read (the
// collector's PULL or SUB). Its goroutine blocks until a message arrives,
// then drains whatever else is ready, up to BatchMax, into one *Inbound, so a
// busy socket costs one actor message per batch rather than per update.
type Reader struct {
	cfg ReaderConfig
	own *owner
}

// NewReader returns the adapter; spawn it with Props.
func NewReader(cfg ReaderConfig) *Reader {
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = 64
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Reader{cfg: cfg, own: newOwner()}
}

// Props spawns the adapter. The same Reader is kept across restarts.
func (r *Reader) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return r }, actor.WithGuardian(resumeAlways()))
}

// Receive starts the socket goroutine on Started and stops it (closing the
// socket) on Stopping.
func (r *Reader) Receive(c actor.Context) {
	switch c.Message().(type) {
	case *actor.Started:
		root := c.ActorSystem().Root
		r.own.start(func() { r.run(root) })
	case *actor.Stopping:
		r.own.halt(nil, func() { r.cfg.Socket.Close() })
	}
}

func (r *Reader) run(root *actor.RootContext) {
	sock := r.cfg.Socket
	defer sock.Close()
	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	rx := transport.NewReceiver(sock)
	for {
		if !r.cfg.Credits.Acquire(r.own.stop) {
			return
		}
		batch, ok := r.readBatch(rx, poller)
		if !ok {
			r.cfg.Credits.Release()
			return
		}
		root.Send(r.cfg.Target, batch)
	}
}

// readBatch waits for at least one message (checking for stop every
// PollInterval) and drains up to BatchMax. It returns false when the reader
// must stop.
func (r *Reader) readBatch(rx *transport.Receiver, poller *zmq.Poller) (*Inbound, bool) {
	for {
		select {
		case <-r.own.stop:
			return nil, false
		default:
		}
		polled, err := poller.Poll(r.cfg.PollInterval)
		if err != nil {
			if transport.IsTerm(err) {
				return nil, false
			}
			if !transport.IsInterrupted(err) {
				r.cfg.Logger.Error("collector poll failed", "err", err)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		if len(polled) == 0 {
			continue
		}
		in := &Inbound{
			Msgs:   make([][][]byte, 0, r.cfg.BatchMax),
			Counts: make([]int, 0, r.cfg.BatchMax),
			Done:   r.cfg.Credits.Release,
		}
		size := 0
		for len(in.Msgs) < r.cfg.BatchMax && (r.cfg.BatchBytes <= 0 || size < r.cfg.BatchBytes) {
			frames, n, err := rx.Recv(zmq.DONTWAIT)
			if err != nil {
				if transport.IsTerm(err) {
					return nil, false
				}
				if !transport.IsAgain(err) && !transport.IsInterrupted(err) {
					r.cfg.Logger.Error("collector receive failed", "err", err)
				}
				break
			}
			in.Msgs = append(in.Msgs, transport.Clone(frames))
			in.Counts = append(in.Counts, n)
			for _, f := range frames {
				size += len(f)
			}
		}
		if len(in.Msgs) > 0 {
			return in, true
		}
	}
}

func resumeAlways() actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.ResumeDirective })
}
