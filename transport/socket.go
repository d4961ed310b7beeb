package transport

import (
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Options are the socket options an adapter sets before binding or
// connecting. Zero values leave libzmq's defaults, except Linger, where
// libzmq's default of waiting forever can hang shutdown: the zero value
// means MinLinger.
type Options struct {
	SndHWM      int           // send high-water mark in messages; 0 = libzmq default (1000)
	RcvHWM      int           // receive high-water mark in messages; 0 = libzmq default (1000)
	Linger      time.Duration // how long Close (and the context's Term) keeps flushing unsent messages; at least MinLinger
	MaxMsgSize  int64         // largest inbound frame; a peer sending more is disconnected; 0 = unlimited
	SndBuf      int           // kernel send buffer per connection (SO_SNDBUF) in bytes; 0 = the kernel's, autotuned
	Subscribe   []string      // SUB sockets: prefixes to subscribe to
	Mandatory   bool          // ROUTER: report unroutable and full peers instead of dropping
	Immediate   bool          // queue only to completed connections
	Identity    string        // DEALER/ROUTER routing id
	CurveServer *CurveServer  // enable CURVE as the server side
	CurveClient *CurveClient  // enable CURVE as the client side
	Heartbeat   *Heartbeat    // ZMTP heartbeats (nil: off, libzmq's default)
}

// Heartbeat turns on ZMTP 3.1 heartbeats (libzmq >= 4.2): the socket
// PINGs each peer every Interval, and drops a connection on which nothing
// arrived for Timeout after a PING, so a vanished peer (a host gone, a
// process stopped) frees its slot in seconds rather than when TCP gives
// up. TTL, sent in each PING, asks the peer to drop the connection if it
// hears nothing from us for that long. Zero Timeout or TTL take Interval×3
// (libzmq's own timeout default is Interval); a peer that stops reading
// (its receive queue full) stops answering too, so keep Timeout above the
// longest pause a legitimate reader makes.
type Heartbeat struct {
	Interval time.Duration
	Timeout  time.Duration
	TTL      time.Duration // at most MaxHeartbeatTTL (longer is cut to it)
}

// HeartbeatEvery is the setting clonekv's server and client use: a PING
// every interval, a peer silent for timeout after one dropped, and the same
// timeout asked of the peer as the TTL. Nil (off) when interval is not
// above 0.
func HeartbeatEvery(interval, timeout time.Duration) *Heartbeat {
	if interval <= 0 {
		return nil
	}
	return &Heartbeat{Interval: interval, Timeout: timeout, TTL: timeout}
}

// MaxHeartbeatTTL is the longest TTL a ZMTP PING can carry: libzmq sends
// it in deciseconds in 16 bits, and refuses a longer ZMQ_HEARTBEAT_TTL.
const MaxHeartbeatTTL = 65535 * 100 * time.Millisecond

// CurveServer holds a server's CURVE secret key (Z85).
type CurveServer struct {
	SecretKey string
	Domain    string // ZAP domain the server's authenticator checks clients in ("*" when empty)
}

// CurveClient holds what a client needs to talk CURVE to a server (all Z85).
type CurveClient struct {
	ServerKey string
	PublicKey string
	SecretKey string
}

// NewSocket creates a socket of type t in zctx with opts applied.
func NewSocket(zctx *zmq.Context, t zmq.Type, opts Options) (*zmq.Socket, error) {
	sock, err := zctx.NewSocket(t)
	if err != nil {
		return nil, fmt.Errorf("new %v socket: %w", t, err)
	}
	if err := applyOptions(sock, opts); err != nil {
		sock.Close()
		return nil, fmt.Errorf("%v socket options: %w", t, err)
	}
	return sock, nil
}

// MinLinger is the shortest linger a socket gets. libzmq 4.3 aborts the
// process (errno_assert at session_base.cpp:260, in clean_pipes) when a
// connection fails while its socket is closing with linger 0 and the
// connection's engine has sent part of a multipart message: linger 0 makes
// the pipe unreadable at once, and dropping the message's remaining frames
// then finds none. That is the common case, not a corner: an engine that
// waits for a slow or stalled peer has usually sent part of a message, and
// a peer that closes as the server shuts down (or a server that dies as a
// client gives up on it) fails the connection during the close.
// With any positive linger the pipe stays readable until the linger ends,
// so only a failure at that exact instant could still hit it.
// TestLingerZeroAbortsLibzmq shows the abort and the floor's cure.
const MinLinger = 100 * time.Millisecond

func applyOptions(sock *zmq.Socket, o Options) error {
	if err := sock.SetLinger(max(o.Linger, MinLinger)); err != nil {
		return fmt.Errorf("linger: %w", err)
	}
	if o.SndHWM > 0 {
		if err := sock.SetSndhwm(o.SndHWM); err != nil {
			return fmt.Errorf("sndhwm: %w", err)
		}
	}
	if o.RcvHWM > 0 {
		if err := sock.SetRcvhwm(o.RcvHWM); err != nil {
			return fmt.Errorf("rcvhwm: %w", err)
		}
	}
	if o.SndBuf > 0 {
		if err := sock.SetSndbuf(o.SndBuf); err != nil {
			return fmt.Errorf("sndbuf: %w", err)
		}
	}
	if o.MaxMsgSize > 0 {
		if err := sock.SetMaxmsgsize(o.MaxMsgSize); err != nil {
			return fmt.Errorf("maxmsgsize: %w", err)
		}
	}
	if o.Mandatory {
		if err := sock.SetRouterMandatory(1); err != nil {
			return fmt.Errorf("router_mandatory: %w", err)
		}
	}
	if o.Immediate {
		if err := sock.SetImmediate(true); err != nil {
			return fmt.Errorf("immediate: %w", err)
		}
	}
	if o.Identity != "" {
		if err := sock.SetIdentity(o.Identity); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	if c := o.CurveServer; c != nil {
		if err := sock.ServerAuthCurve(c.Domain, c.SecretKey); err != nil {
			return fmt.Errorf("curve server: %w", err)
		}
	}
	if c := o.CurveClient; c != nil {
		if err := sock.ClientAuthCurve(c.ServerKey, c.PublicKey, c.SecretKey); err != nil {
			return fmt.Errorf("curve client: %w", err)
		}
	}
	if h := o.Heartbeat; h != nil && h.Interval > 0 {
		timeout, ttl := h.Timeout, h.TTL
		if timeout <= 0 {
			timeout = 3 * h.Interval
		}
		if ttl <= 0 {
			ttl = 3 * h.Interval
		}
		ttl = min(ttl, MaxHeartbeatTTL)
		if err := sock.SetHeartbeatIvl(h.Interval); err != nil {
			return fmt.Errorf("heartbeat_ivl: %w", err)
		}
		if err := sock.SetHeartbeatTimeout(timeout); err != nil {
			return fmt.Errorf("heartbeat_timeout: %w", err)
		}
		if err := sock.SetHeartbeatTtl(ttl); err != nil {
			return fmt.Errorf("heartbeat_ttl: %w", err)
		}
	}
	for _, prefix := range o.Subscribe {
		if err := sock.SetSubscribe(prefix); err != nil {
			return fmt.Errorf("subscribe %q: %w", prefix, err)
		}
	}
	return nil
}

// Bind creates a socket and binds it to endpoint.
func Bind(zctx *zmq.Context, t zmq.Type, endpoint string, opts Options) (*zmq.Socket, error) {
	sock, err := NewSocket(zctx, t, opts)
	if err != nil {
		return nil, err
	}
	if err := sock.Bind(endpoint); err != nil {
		sock.Close()
		return nil, fmt.Errorf("bind %v to %s: %w", t, endpoint, err)
	}
	return sock, nil
}

// Connect creates a socket and connects it to endpoint.
func Connect(zctx *zmq.Context, t zmq.Type, endpoint string, opts Options) (*zmq.Socket, error) {
	sock, err := NewSocket(zctx, t, opts)
	if err != nil {
		return nil, err
	}
	if err := sock.Connect(endpoint); err != nil {
		sock.Close()
		return nil, fmt.Errorf("connect %v to %s: %w", t, endpoint, err)
	}
	return sock, nil
}
