package client

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// DefaultPort is the base port P an endpoint without a port gets.
const DefaultPort = 5556

// Filter says where keys outside the subtree are filtered out, which decides
// whether lost updates can be detected. See the package documentation.
type Filter int

const (
	// FilterLocal subscribes to every update and drops keys outside the
	// subtree in the client. Every sequence number is seen, so a lost update
	// is always detected (and repaired by a re-join). The default.
	FilterLocal Filter = iota
	// FilterServer subscribes to the subtree and "HUGZ" only, so the server
	// sends only the subtree's updates. Sequences are global, so gaps are
	// expected and cannot be told from losses: only a restart (sequence going
	// backwards, connection lost) and silence are detected.
	FilterServer
)

func (f Filter) String() string {
	switch f {
	case FilterLocal:
		return "local"
	case FilterServer:
		return "server"
	}
	return "Filter(" + strconv.Itoa(int(f)) + ")"
}

// Collector is the kind of socket the server collects updates on, which
// decides the socket the client writes with.
type Collector int

const (
	// CollectorPull: the server's collector is a PULL (Model Five, the
	// seed, clonesrv's default); the client writes on a PUSH. The default.
	CollectorPull Collector = iota
	// CollectorSub: the server's collector is a SUB (RFC 12, Model Six,
	// clonesrv --collector sub); the client writes on a PUB. It sends only
	// once the server's subscription has reached it (a PUB drops what it
	// has no subscriber for), holding writes until then.
	CollectorSub
)

func (c Collector) String() string {
	switch c {
	case CollectorPull:
		return "pull"
	case CollectorSub:
		return "sub"
	}
	return "Collector(" + strconv.Itoa(int(c)) + ")"
}

// ParseCollector reads "pull" or "sub" (clonesrv's --collector words).
func ParseCollector(s string) (Collector, error) {
	switch s {
	case "pull":
		return CollectorPull, nil
	case "sub":
		return CollectorSub, nil
	}
	return 0, fmt.Errorf("clonekv client: collector %q: want pull or sub", s)
}

// Default decode limits for what the client accepts from a server. A
// message over them is dropped and counted (Stats.Drops), never stored.
const (
	DefaultMaxKey   = 1<<16 - 1 // far above the Guide's 255, and what the local map can hold
	DefaultMaxProps = 1 << 16
	DefaultMaxBody  = 64 << 20
)

// Options configure a Client. Only Endpoints is required.
type Options struct {
	// Endpoints are servers' base addresses "tcp://host:P" (P = the snapshot
	// port; P+1 and P+2 are derived). "host:P" and "host" (port 5556) are
	// accepted too. The first is the primary; on silence or failure the
	// client moves to the next, round robin (the Guide's Model Six).
	Endpoints []string
	// Subtree is the key prefix the client follows; "" follows everything.
	Subtree string
	// Filter: FilterLocal (default, detects every lost update) or
	// FilterServer (less traffic for small subtrees, cannot detect losses).
	Filter Filter
	// HeartbeatTimeout: when nothing at all (not even a HUGZ) arrives for
	// this long, the server is taken for dead and the client moves to the
	// next endpoint. Default 3s (three of the server's 1s heartbeats).
	// Negative turns silence detection off. The timer is armed only once
	// the server has sent a HUGZ on this connection: the Guide's Model Five
	// servers (and clonesrv --hugz 0) never do, and an idle one is not dead.
	// Such a server's death is still seen when its connection drops (a
	// crashed process's kernel closes it; a vanished host is found by TCP
	// keepalive, on unless this is negative); a hung process that never
	// sent HUGZ is not detected, unless ZMTPHeartbeat is on.
	HeartbeatTimeout time.Duration
	// ZMTPHeartbeat, above 0, turns on ZMTP heartbeats (PING/PONG, libzmq's
	// ZMQ_HEARTBEAT_IVL) at this interval on the client's subscriber. A
	// server from which nothing arrives on it for ZMTPHeartbeatTimeout
	// (default three intervals; not shorter than the interval) after a
	// PING is taken for gone: libzmq drops the connection and the client
	// re-joins, as on any dropped connection. That finds a hung server
	// that sends no HUGZ (the Guide's Model Five, clonesrv --hugz 0), such
	// as a stopped process, whose kernel still answers TCP keepalive. Off
	// by default, as on the server: a PONG waits behind the updates the
	// subscriber has not read, so a client that falls behind by more than
	// the timeout is dropped and re-joins (and libzmq 4.3 is reported to
	// abort on reconnecting a SUB dropped so with a full queue,
	// zeromq/libzmq#3937, though none did in clonekv's runs: see
	// server.DefaultZMTPHeartbeat).
	// The writing socket and the snapshot DEALER get none: a server that
	// pushes back on writers (a full collector queue, an election) reads
	// no PINGs meanwhile, and a dropped writing connection would lose the
	// updates in its buffers; a stalled snapshot is JoinTimeout's.
	ZMTPHeartbeat, ZMTPHeartbeatTimeout time.Duration
	// Collector is the server's collector socket kind: CollectorPull
	// (default, the client writes on a PUSH) or CollectorSub (a PUB).
	Collector Collector
	// MaxKey, MaxProps and MaxBody bound the key, properties and body of
	// each message the client accepts from a server (defaults
	// DefaultMaxKey, DefaultMaxProps, DefaultMaxBody). Messages over them
	// are dropped and counted per reason in Stats.Drops; Get and Snapshot
	// answer "not found" for a key longer than MaxKey without looking.
	MaxKey, MaxProps, MaxBody int
	// JoinTimeout bounds connecting to an endpoint and each wait for the
	// next snapshot message; past it the next endpoint is tried. Default 3s.
	JoinTimeout time.Duration
	// SubRcvHWM is the subscriber's receive high-water mark in messages
	// (0 = libzmq's 1000). Past it (and the server's PUB mark) updates are
	// lost, detected and repaired by a re-join.
	SubRcvHWM int
	// PushSndHWM bounds updates queued for the server (0 = libzmq's 1000);
	// past it Set fails with ErrBackpressure.
	PushSndHWM int
	// Linger is how long Close waits to hand queued updates to the server.
	// Default 1s; negative means as short as is safe (transport.MinLinger,
	// 100ms: libzmq can abort on a socket closed with linger 0), then drop
	// them.
	Linger time.Duration
	// Curve, when set, makes all three sockets talk CURVE to the server.
	Curve *transport.CurveClient
	// EventBuffer is each watcher's channel capacity (default 1024). A
	// watcher that does not keep up loses events and is told how many
	// (EventLost); the client itself never waits for a watcher.
	EventBuffer int
	// MaxPending bounds the updates buffered while a snapshot streams
	// (default 1<<20); a join that would need more is abandoned and retried.
	MaxPending int
	// NoResume turns the resume extension off: every re-join asks for a
	// whole snapshot (the plain ICANHAZ?), as against the Guide's servers.
	NoResume bool
	// AdvertWait bounds how long a re-join to an endpoint the client has
	// never heard from (a failover to another node) waits for the first
	// HUGZ on its subscriber, which says whether that server can resume the
	// client's history, before asking for a snapshot. Default: a third of
	// HeartbeatTimeout (one of the server's heartbeat intervals at the
	// default settings) plus 250ms, or 1.25s when HeartbeatTimeout is off;
	// negative: never wait (such a re-join is a whole snapshot).
	AdvertWait time.Duration
	// Since, when above 0, makes the first join ask only for the updates
	// after that sequence (clonecli watch --since): for a consumer that
	// holds the state at Since elsewhere and wants what changed. The map
	// starts empty as though it were that state: when the server resumes,
	// it then holds only the keys changed after Since (deleted ones are
	// absent), and watchers get EventResumed and those changes in order;
	// when the server answers with a whole snapshot (Since is outside its
	// retained history, or of another history), the map is that snapshot
	// and watchers get EventFull and every key as an update. Later re-joins
	// behave as always.
	Since int64
	// SinceHistory is the history id Since belongs to. Empty: the history
	// the server advertises (learned from its first HUGZ).
	SinceHistory string
	// Logger receives the client's logs (quiet at info: joins, switches and
	// re-joins only). Default slog.Default().
	Logger *slog.Logger

	hooks *testHooks // test-only
}

// testHooks let tests inside the package misbehave on purpose.
type testHooks struct {
	// beforeSubRead runs in the owner goroutine before each batch read from
	// the subscriber (a test stalls the reader here).
	beforeSubRead func()
	// retryBackoff, when set, replaces the first wait after a refused
	// snapshot request.
	retryBackoff time.Duration
	// joinEvents, when set, is told how many events a completed join built
	// (in the owner goroutine, before they are delivered).
	joinEvents func(n int)
}

// Errors returned by the client.
var (
	ErrClosed          = errors.New("clonekv client: closed")
	ErrNotConnected    = errors.New("clonekv client: no server connection right now (re-joining)")
	ErrBackpressure    = errors.New("clonekv client: too many updates queued for the server")
	ErrOutsideSubtree  = errors.New("clonekv client: key is outside the subtree, its echo cannot be seen with FilterServer")
	errNoEndpoints     = errors.New("clonekv client: no server endpoint given")
	errEmptyValue      = errors.New("clonekv client: empty value (an empty body means delete: use Delete)")
	errReservedPattern = "clonekv client: key %q is reserved by the protocol"
)

func (o Options) withDefaults() (Options, []endpoint, error) {
	if len(o.Endpoints) == 0 {
		return o, nil, errNoEndpoints
	}
	eps := make([]endpoint, 0, len(o.Endpoints))
	for _, s := range o.Endpoints {
		ep, err := parseEndpoint(s)
		if err != nil {
			return o, nil, err
		}
		eps = append(eps, ep)
	}
	if len(o.Subtree) > kvmsg.DefaultMaxKey {
		return o, nil, fmt.Errorf("clonekv client: subtree is %d bytes, servers accept at most %d", len(o.Subtree), kvmsg.DefaultMaxKey)
	}
	if o.Filter != FilterLocal && o.Filter != FilterServer {
		return o, nil, fmt.Errorf("clonekv client: unknown filter %v", o.Filter)
	}
	if o.Collector != CollectorPull && o.Collector != CollectorSub {
		return o, nil, fmt.Errorf("clonekv client: unknown collector %v", o.Collector)
	}
	if o.MaxKey <= 0 {
		o.MaxKey = DefaultMaxKey
	}
	if o.MaxProps <= 0 {
		o.MaxProps = DefaultMaxProps
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = 3 * time.Second
	}
	if o.JoinTimeout <= 0 {
		o.JoinTimeout = 3 * time.Second
	}
	if o.ZMTPHeartbeat < 0 {
		o.ZMTPHeartbeat = 0
	}
	if o.ZMTPHeartbeat > 0 && o.ZMTPHeartbeatTimeout <= 0 {
		o.ZMTPHeartbeatTimeout = 3 * o.ZMTPHeartbeat
	}
	if o.ZMTPHeartbeat > 0 && o.ZMTPHeartbeatTimeout < o.ZMTPHeartbeat {
		return o, nil, fmt.Errorf("clonekv client: ZMTP heartbeat timeout %v is shorter than the interval %v", o.ZMTPHeartbeatTimeout, o.ZMTPHeartbeat)
	}
	if o.Linger == 0 {
		o.Linger = time.Second
	} else if o.Linger < 0 {
		o.Linger = 0
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = 1024
	}
	if o.AdvertWait == 0 {
		o.AdvertWait = 1250 * time.Millisecond
		if o.HeartbeatTimeout > 0 {
			o.AdvertWait = o.HeartbeatTimeout/3 + 250*time.Millisecond
		}
	}
	if o.Since < 0 {
		return o, nil, fmt.Errorf("clonekv client: negative Since %d", o.Since)
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.hooks == nil {
		o.hooks = &testHooks{}
	}
	return o, eps, nil
}

// zmtpHeartbeat is the transport setting for ZMTPHeartbeat (nil: off).
func (o *Options) zmtpHeartbeat() *transport.Heartbeat {
	return transport.HeartbeatEvery(o.ZMTPHeartbeat, o.ZMTPHeartbeatTimeout)
}

// endpoint is one server: its three addresses.
type endpoint struct {
	name string // as given, normalised: tcp://host:P
	host string
	port int
}

func (e endpoint) addr(offset int) string {
	return "tcp://" + net.JoinHostPort(e.host, strconv.Itoa(e.port+offset))
}

func parseEndpoint(s string) (endpoint, error) {
	rest := strings.TrimSpace(s)
	if i := strings.Index(rest, "://"); i >= 0 {
		if rest[:i] != "tcp" {
			return endpoint{}, fmt.Errorf("clonekv client: endpoint %q: only tcp:// is supported (the ports P, P+1, P+2 are derived)", s)
		}
		rest = rest[i+3:]
	}
	host, portStr, err := net.SplitHostPort(rest)
	port := DefaultPort
	if err != nil {
		// No port: the whole thing is the host.
		host = strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
	} else if port, err = strconv.Atoi(portStr); err != nil || port < 1 || port > 65533 {
		return endpoint{}, fmt.Errorf("clonekv client: endpoint %q: port must be a number from 1 to 65533", s)
	}
	if host == "" || strings.ContainsAny(host, "/ ") {
		return endpoint{}, fmt.Errorf("clonekv client: endpoint %q: want tcp://host:port", s)
	}
	e := endpoint{host: host, port: port}
	e.name = e.addr(0)
	return e, nil
}
