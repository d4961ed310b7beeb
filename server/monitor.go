package server

import (
	"fmt"
	"log/slog"
	"sync"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/stats"
)

// SocketPeers is what the socket monitor knows about one server socket's
// connections: subscribers on the publisher, joining clients on the
// snapshot socket, update senders on the collector.
type SocketPeers struct {
	Socket     string // "snapshot", "publisher" or "collector"
	Connected  int64  // TCP connections open now
	Accepted   int64  // connections accepted since start
	Handshakes int64  // ZMTP handshakes completed (with CURVE: clients admitted)
	Failed     int64  // handshakes failed: plaintext or wrong-key clients, ZAP refusals, garbage
	// Closed counts connections that ended: closed by the peer, or dropped
	// by libzmq (a frame over the socket's ZMQ_MAXMSGSIZE, a missed ZMTP
	// heartbeat, a protocol error). libzmq 4.3's monitor reports all of
	// them as the same EVENT_DISCONNECTED (with the fd, no reason), so
	// they are one counter, reason "closed".
	Closed int64
}

// SourceConnection is where closed connections are logged.
const SourceConnection stats.Source = "connection"

// monitorEvents are the libzmq socket events the monitor asks for.
const monitorEvents = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED |
	zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH

// guards are the server's side tasks outside the actor pipeline: the ZAP
// handler (CURVE only) and the socket monitor. Each has one goroutine, the
// only user of its sockets, started by start and ended by the context's
// termination (ETERM); wait waits for them.
type guards struct {
	log     *slog.Logger
	curve   bool
	rejects *stats.RejectLog
	zap     *zapHandler

	names []string
	pairs []*zmq.Socket // monitor PAIR sockets, one per server socket

	mu    sync.Mutex
	peers []SocketPeers
	open  []map[int]bool // per socket: file descriptors of open connections

	wg sync.WaitGroup
}

// newGuards binds the ZAP handler when CURVE is on. Call it before binding
// the server sockets so that no handshake happens without it.
func newGuards(zctx *zmq.Context, c *CurveConfig, log *slog.Logger, st *stats.Server) (*guards, error) {
	g := &guards{log: log, curve: c != nil, rejects: &stats.RejectLog{Stats: st, Logger: log}}
	if c != nil {
		z, err := newZAPHandler(zctx, c, log, g.rejects)
		if err != nil {
			return nil, err
		}
		g.zap = z
	}
	return g, nil
}

// watch attaches a monitor to each named socket (in the goroutine that
// created them, before any other goroutine uses them).
func (g *guards) watch(zctx *zmq.Context, names []string, socks []*zmq.Socket) error {
	for i, sock := range socks {
		ep := "inproc://clonekv-monitor-" + names[i]
		if err := sock.Monitor(ep, monitorEvents); err != nil {
			return fmt.Errorf("monitor %s socket: %w", names[i], err)
		}
		pair, err := zctx.NewSocket(zmq.PAIR)
		if err != nil {
			return fmt.Errorf("monitor %s: %w", names[i], err)
		}
		g.pairs = append(g.pairs, pair)
		if err := pair.SetLinger(0); err != nil {
			return fmt.Errorf("monitor %s linger: %w", names[i], err)
		}
		if err := pair.Connect(ep); err != nil {
			return fmt.Errorf("monitor %s connect: %w", names[i], err)
		}
		g.names = append(g.names, names[i])
		g.peers = append(g.peers, SocketPeers{Socket: names[i]})
		g.open = append(g.open, map[int]bool{})
	}
	return nil
}

// start runs the ZAP handler and the monitor until the context terminates.
func (g *guards) start() {
	if g.zap != nil {
		g.wg.Go(g.zap.run)
	}
	if len(g.pairs) > 0 {
		g.wg.Go(g.monitor)
	}
}

// wait waits for the goroutines start began (after zmq context Term).
func (g *guards) wait() { g.wg.Wait() }

// close closes the sockets of guards that were never started.
func (g *guards) close() {
	if g.zap != nil {
		g.zap.sock.Close()
	}
	for _, p := range g.pairs {
		p.Close()
	}
}

// Peers returns what the monitor knows about each socket's connections.
func (g *guards) Peers() []SocketPeers {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]SocketPeers(nil), g.peers...)
}

func (g *guards) monitor() {
	defer func() {
		for _, p := range g.pairs {
			p.Close()
		}
	}()
	poller := zmq.NewPoller()
	for _, p := range g.pairs {
		poller.Add(p, zmq.POLLIN)
	}
	for {
		ready, err := poller.Poll(-1)
		if err != nil {
			if isTerm(err) {
				return
			}
			g.log.Warn("monitor poll", "err", err)
			continue
		}
		for _, r := range ready {
			for i, p := range g.pairs {
				if p == r.Socket {
					if !g.drain(i) {
						return
					}
				}
			}
		}
	}
}

// drain reads every queued event of socket i; false when the context ends.
func (g *guards) drain(i int) bool {
	for {
		ev, _, value, err := g.pairs[i].RecvEvent(zmq.DONTWAIT)
		if err != nil {
			return !isTerm(err)
		}
		g.event(i, ev, value)
	}
}

func (g *guards) event(i int, ev zmq.Event, value int) {
	g.mu.Lock()
	p := &g.peers[i]
	switch ev {
	case zmq.EVENT_ACCEPTED:
		p.Accepted++
		g.open[i][value] = true // value is the connection's file descriptor
	case zmq.EVENT_DISCONNECTED:
		delete(g.open[i], value)
		p.Closed++
	case zmq.EVENT_HANDSHAKE_SUCCEEDED:
		p.Handshakes++
	case zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH:
		p.Failed++
	}
	p.Connected = int64(len(g.open[i]))
	open := p.Connected
	g.mu.Unlock()

	if ev == zmq.EVENT_DISCONNECTED {
		// Writers rarely go; a closed collector connection may be one
		// libzmq dropped for an oversized frame, so it is logged at info.
		level := slog.LevelDebug
		if g.names[i] == "collector" {
			level = slog.LevelInfo
		}
		g.rejects.Note(SourceConnection, level, "connection closed (by the peer, or by libzmq: frame over the size limit, missed heartbeats)",
			"socket", g.names[i], "fd", value, "open", open)
	}

	// ZAP refusals (FAILED_AUTH) were counted and logged by the handler;
	// other failures under CURVE are clients that could not even start
	// (no CURVE, wrong server key) and are refused here.
	if g.curve && (ev == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL || ev == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL) {
		g.rejects.Reject(SourceAuth, ReasonHandshake,
			fmt.Errorf("%v (code %#x): a plaintext client or a wrong server key", ev, value), "socket", g.names[i])
	}
}
