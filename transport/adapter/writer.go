package adapter

import (
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
)

// Outbound is a batch of messages for a Writer. Done, when not nil, is
// called once every message has been handed to the socket.
type Outbound struct {
	Msgs *transport.Flat
	Done func()
}

// WriterConfig configures a Writer.
type WriterConfig struct {
	Socket *zmq.Socket // bound or connected; the Writer owns it from now on
	Queue  int         // batches buffered between the actor and the goroutine; default 64
	Logger *slog.Logger
	// OnSent, when set, is called from the socket goroutine with the number
	// of messages of each batch written (for counters).
	OnSent func(n int)
}

// Writer is the socket adapter for a socket that is only written (the PUB).
// Its Receive hands *Outbound batches to its goroutine through a bounded
// channel; the goroutine writes them in order. On Stopping it writes what is
// queued, then closes the socket, whose linger decides how long ZeroMQ keeps
// flushing to the network.
type Writer struct {
	cfg WriterConfig
	ch  chan *Outbound
	own *owner
}

// NewWriter returns the adapter; spawn it with Props.
func NewWriter(cfg WriterConfig) *Writer {
	if cfg.Queue <= 0 {
		cfg.Queue = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{cfg: cfg, ch: make(chan *Outbound, cfg.Queue), own: newOwner()}
}

// Props spawns the adapter. The same Writer is kept across restarts.
func (w *Writer) Props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return w }, actor.WithGuardian(resumeAlways()))
}

// Receive forwards batches to the socket goroutine.
func (w *Writer) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		w.own.start(w.run)
	case *Outbound:
		select {
		case w.ch <- m:
		case <-w.own.done:
			// The goroutine has gone (socket closed): nothing can be sent.
			if m.Done != nil {
				m.Done()
			}
		}
	case *actor.Stopping:
		w.own.halt(func() { close(w.ch) }, func() { w.cfg.Socket.Close() })
	}
}

func (w *Writer) run() {
	sock := w.cfg.Socket
	defer sock.Close()
	for out := range w.ch {
		for from := 0; from < out.Msgs.Len(); {
			n, err := transport.SendFlat(sock, out.Msgs, from, 0, nil, 0)
			from += n
			if err != nil {
				if transport.IsTerm(err) {
					w.drain(out)
					return
				}
				if !transport.IsInterrupted(err) {
					w.cfg.Logger.Error("publish failed", "err", err)
					from++ // skip the message that failed
				}
			}
		}
		if w.cfg.OnSent != nil {
			w.cfg.OnSent(out.Msgs.Len())
		}
		if out.Done != nil {
			out.Done()
		}
	}
}

// drain releases every queued batch after the socket has failed for good.
func (w *Writer) drain(cur *Outbound) {
	if cur.Done != nil {
		cur.Done()
	}
	for out := range w.ch {
		if out.Done != nil {
			out.Done()
		}
	}
}
