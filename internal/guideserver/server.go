// Package guideserver is a Go rendering of the ZeroMQ Guide's Clone
// servers as the Go port (pebbe/zmq4's examples/clonesrv5.go and
// clonesrv6.go with examples/kvmsg) puts them on the wire, used as the
// reference peer that clonekv's client and clonecli are tested against. It
// reproduces what those servers send, byte for byte, not how they are
// written:
//
//   - Every message it sends has a properties frame of the Go kvmsg's
//     encoding: the "name=value" lines joined with "\n", plus one "\n", so a
//     message without properties (KTHXBAI, HUGZ, most KVPUBs) carries "\n".
//     UUIDs are passed on as received (empty in KTHXBAI and HUGZ).
//   - An update from a client gets the next sequence and is published at
//     once, with the properties it came with (re-encoded as above). If it has
//     a ttl, the stored copy's ttl becomes the absolute expiry in whole Unix
//     seconds (time.Now().Add(ttl).Unix()), and that is what KVSYNCs carry.
//   - Every Tick (1s in the Guide) stored keys whose expiry has passed get
//     the next sequence and are published with an empty body (a delete),
//     their absolute ttl and their UUID still on them, and are removed.
//   - A snapshot is every stored key under the subtree (in Go map order,
//     that is random), each at the sequence it was stored with, then
//     KTHXBAI with the server's sequence and the subtree as body.
//   - ModelFive collects on a PULL and sends no heartbeat. ModelSix is the
//     primary once active: it collects on a SUB subscribed to everything and
//     publishes HUGZ every Tick with the sequence frame set to the server's
//     current sequence (not 0 as RFC 12 says).
//
// Differences, none of which a client that follows the protocol can see:
// the Go servers stop (their reactor returns the error) on a snapshot
// request that is not ICANHAZ? and on a ttl that is not an integer; this one
// drops such input and counts it. Model Six's Binary Star pair (the backup,
// the voting, failover) is not reproduced: Server is a primary that is
// active from the start.
package guideserver

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
)

// Model is which of the Guide's servers to behave as.
type Model int

const (
	ModelFive Model = iota // clonesrv5: PULL collector, no HUGZ
	ModelSix               // clonesrv6 primary: SUB collector, HUGZ with the sequence
)

func (m Model) String() string {
	if m == ModelSix {
		return "model-six"
	}
	return "model-five"
}

// Config configures a server. Zero fields take the defaults.
type Config struct {
	Model Model
	// Host to bind; default 127.0.0.1.
	Host string
	// Port is the base port P (snapshots), P+1 (publisher), P+2 (collector);
	// 0 picks a free triple.
	Port int
	// Tick is the ttl flush (and Model Six heartbeat) interval; default 1s,
	// as in the Guide.
	Tick time.Duration
}

// Stats count what the server did.
type Stats struct {
	Sequence  int64
	Keys      int
	Updates   int64 // client updates published
	Expired   int64 // ttl deletes published
	Snapshots int64 // KTHXBAIs sent
	Hugz      int64
	Dropped   int64 // input the Go servers would have stopped on
	// LongRequests counts ICANHAZ? with frames after the subtree (a resume
	// request): served as a plain one here, misparsed by the C servers, so
	// a clonekv client must never send one to a Guide server.
	LongRequests int64
}

// Server is a running Guide-like server. One goroutine owns its sockets.
type Server struct {
	cfg  Config
	port int
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex // guards stats
	stats Stats
	hugz  atomic.Int64
}

// kv is one stored message, as the Go kvmsg keeps it: frames as strings and
// the properties as "name=value" lines.
type kv struct {
	key   string
	seq   int64
	uuid  string
	props []string
	body  string
}

// Start binds the three sockets and starts serving.
func Start(cfg Config) (*Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("guideserver: context: %w", err)
	}
	collector := transport.PortSpec{Type: zmq.PULL, Offset: 2}
	if cfg.Model == ModelSix {
		collector = transport.PortSpec{Type: zmq.SUB, Offset: 2, Options: transport.Options{Subscribe: []string{""}}}
	}
	socks, port, err := transport.BindPorts(zctx, cfg.Host, cfg.Port, []transport.PortSpec{
		{Type: zmq.ROUTER, Offset: 0}, {Type: zmq.PUB, Offset: 1}, collector,
	})
	if err != nil {
		zctx.Term()
		return nil, fmt.Errorf("guideserver: bind: %w", err)
	}
	s := &Server{cfg: cfg, port: port, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run(zctx, socks[0], socks[1], socks[2])
	return s, nil
}

// Port returns the base port P.
func (s *Server) Port() int { return s.port }

// Endpoint returns tcp://host:P.
func (s *Server) Endpoint() string { return transport.Endpoint(s.cfg.Host, s.port) }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Hugz = s.hugz.Load()
	return st
}

// Close stops the server and waits until its sockets are closed.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

// state is the server's data, owned by the run goroutine.
type state struct {
	kvmap    map[string]*kv
	sequence int64
}

func (s *Server) run(zctx *zmq.Context, router, pub, collector *zmq.Socket) {
	defer close(s.done)
	defer zctx.Term()
	defer func() {
		for _, sock := range []*zmq.Socket{router, pub, collector} {
			sock.Close()
		}
	}()
	st := &state{kvmap: map[string]*kv{}}
	poller := zmq.NewPoller()
	poller.Add(router, zmq.POLLIN)
	poller.Add(collector, zmq.POLLIN)
	nextTick := time.Now().Add(s.cfg.Tick)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		// 100ms at most, as the Go port's reactor precision.
		wait := min(max(time.Until(nextTick), 0), 100*time.Millisecond)
		polled, err := poller.Poll(wait)
		if err != nil && !transport.IsInterrupted(err) {
			return
		}
		for _, p := range polled {
			switch p.Socket {
			case router:
				s.snapshot(st, router)
			case collector:
				s.collect(st, collector, pub)
			}
		}
		if !time.Now().Before(nextTick) {
			nextTick = time.Now().Add(s.cfg.Tick)
			s.flushTTL(st, pub)
			if s.cfg.Model == ModelSix {
				send(pub, nil, &kv{key: "HUGZ", seq: st.sequence})
				s.hugz.Add(1)
			}
		}
		s.mu.Lock()
		s.stats.Sequence, s.stats.Keys = st.sequence, len(st.kvmap)
		s.mu.Unlock()
	}
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// snapshot answers one ICANHAZ?.
func (s *Server) snapshot(st *state, router *zmq.Socket) {
	frames, _, err := transport.RecvMessage(router, zmq.DONTWAIT, nil)
	if err != nil {
		return
	}
	if len(frames) < 3 || string(frames[1]) != "ICANHAZ?" {
		s.count(func(c *Stats) { c.Dropped++ })
		return
	}
	if len(frames) > 3 {
		s.count(func(c *Stats) { c.LongRequests++ })
	}
	id, subtree := frames[0], string(frames[2])
	for _, m := range st.kvmap {
		if strings.HasPrefix(m.key, subtree) {
			send(router, id, m)
		}
	}
	send(router, id, &kv{key: "KTHXBAI", seq: st.sequence, body: subtree})
	s.count(func(c *Stats) { c.Snapshots++ })
}

// collect sequences, publishes and stores one client update.
func (s *Server) collect(st *state, collector, pub *zmq.Socket) {
	frames, _, err := transport.RecvMessage(collector, zmq.DONTWAIT, nil)
	if err != nil {
		return
	}
	m := recvKV(frames)
	st.sequence++
	m.seq = st.sequence
	send(pub, nil, m)
	s.count(func(c *Stats) { c.Updates++ })
	if v, ok := m.prop("ttl"); ok {
		ttl, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			s.count(func(c *Stats) { c.Dropped++ }) // the Go port stops here
			return
		}
		m.setProp("ttl", strconv.FormatInt(time.Now().Add(time.Duration(ttl)*time.Second).Unix(), 10))
	}
	st.store(m)
}

// flushTTL publishes and removes every key whose absolute ttl has passed.
func (s *Server) flushTTL(st *state, pub *zmq.Socket) {
	for _, m := range st.kvmap {
		v, ok := m.prop("ttl")
		if !ok {
			continue
		}
		ttl, err := strconv.ParseInt(v, 10, 64)
		if err != nil || !time.Now().After(time.Unix(ttl, 0)) {
			continue
		}
		st.sequence++
		m.seq = st.sequence
		m.body = ""
		send(pub, nil, m)
		st.store(m)
		s.count(func(c *Stats) { c.Expired++ })
	}
}

func (st *state) store(m *kv) {
	if m.body != "" {
		st.kvmap[m.key] = m
	} else {
		delete(st.kvmap, m.key)
	}
}

// recvKV reads a message as the Go kvmsg does: the first five frames
// (missing ones empty), the properties split on "\n" without the last empty
// line.
func recvKV(frames [][]byte) *kv {
	f := make([]string, 5)
	for i := 0; i < 5 && i < len(frames); i++ {
		f[i] = string(frames[i])
	}
	props := strings.Split(f[3], "\n")
	if n := len(props); n > 0 && props[n-1] == "" {
		props = props[:n-1]
	}
	return &kv{key: f[0], uuid: f[2], props: props, body: f[4]}
}

func (m *kv) prop(name string) (string, bool) {
	for _, p := range m.props {
		if v, ok := strings.CutPrefix(p, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// setProp removes the first property called name and appends the new value,
// as the Go kvmsg's SetProp.
func (m *kv) setProp(name, value string) {
	for i, p := range m.props {
		if strings.HasPrefix(p, name+"=") {
			m.props = append(m.props[:i:i], m.props[i+1:]...)
			break
		}
	}
	m.props = append(m.props, name+"="+value)
}

// send writes m (after an identity frame for the ROUTER) as the Go kvmsg
// encodes it. Errors are ignored, as the Go port ignores them.
func send(sock *zmq.Socket, id []byte, m *kv) {
	seq := make([]byte, 8)
	for i := range 8 {
		seq[i] = byte(m.seq >> (56 - 8*i))
	}
	frames := [][]byte{[]byte(m.key), seq, []byte(m.uuid), []byte(strings.Join(m.props, "\n") + "\n"), []byte(m.body)}
	if id != nil {
		frames = append([][]byte{id}, frames...)
	}
	_ = transport.SendMessage(sock, frames, 0)
}
