package client

import (
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// session is the sockets connected to one endpoint: DEALER (snapshots, P),
// SUB (updates and HUGZ, P+1), PUSH or XPUB (our updates, P+2), and a PAIR that
// receives the SUB's connection events (a dropped connection means the
// server went away or restarted: the stream may have a hole). All are
// created, used and closed by the owner goroutine only.
//
// The SUB and the DEALER are read through a transport.Receiver made with
// the socket (one cgo call per message instead of ~28): the frames it
// returns live only until its next Recv, so the owner copies what it keeps.
type session struct {
	ep       endpoint
	idx      int // index in the endpoint list
	dealer   *zmq.Socket
	dealerRx *transport.Receiver // reads dealer; replaced with it
	sub      *zmq.Socket
	subRx    *transport.Receiver // reads sub
	push     *zmq.Socket         // PUSH (CollectorPull) or XPUB (CollectorSub)
	mon      *zmq.Socket

	subReady bool  // the SUB's handshake with the server completed
	rawPrev  int64 // the last sequence received on this SUB (0: none yet)

	// CollectorSub: the XPUB sends only once the server's SUB has
	// subscribed (a PUB drops what no subscriber asked for); until then
	// writes wait in held, in order.
	pubSub   bool // the server's collector subscribed
	held     []heldWrite
	hugzSeen bool // a HUGZ arrived on this SUB: silence detection is armed
}

// heldWrite is an update waiting for the collector's subscription.
type heldWrite struct {
	frames [][]byte
	key    []byte
}

// monitorEvents are the SUB connection events the owner acts on.
const monitorEvents = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED |
	zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH

// openSession creates and connects the SUB (with its monitor) and the PUSH.
// The DEALER is made per snapshot by newDealer. monAddr must be unique in
// zctx.
func openSession(zctx *zmq.Context, ep endpoint, idx int, o *Options, strict bool, monAddr string) (s *session, err error) {
	s = &session{ep: ep, idx: idx}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	subs := []string{""}
	if !strict {
		// The subtree and the heartbeats: a subtree subscription alone
		// would filter HUGZ out and silence detection would misfire.
		subs = []string{o.Subtree, kvmsg.KeyHeartbeat}
	}
	if s.sub, err = transport.NewSocket(zctx, zmq.SUB, transport.Options{
		RcvHWM: o.SubRcvHWM, Subscribe: subs, CurveClient: o.Curve, Heartbeat: o.zmtpHeartbeat(),
	}); err != nil {
		return nil, fmt.Errorf("subscriber for %s: %w", ep.name, err)
	}
	if o.HeartbeatTimeout > 0 {
		// TCP keepalive, so that a server host that vanished without
		// closing the connection shows as a dropped connection even when it
		// never sent HUGZ (silence detection waits for a first one). ZMTP
		// heartbeats, which also find a stopped process, are opt-in
		// (Options.ZMTPHeartbeat says why).
		idle := max(int(o.HeartbeatTimeout/time.Second), 1)
		if err = errors.Join(s.sub.SetTcpKeepalive(1), s.sub.SetTcpKeepaliveIdle(idle),
			s.sub.SetTcpKeepaliveIntvl(1), s.sub.SetTcpKeepaliveCnt(3)); err != nil {
			return nil, fmt.Errorf("subscriber keepalive for %s: %w", ep.name, err)
		}
	}
	s.subRx = transport.NewReceiver(s.sub)
	if err = s.sub.Monitor(monAddr, monitorEvents); err != nil {
		return nil, fmt.Errorf("monitor subscriber for %s: %w", ep.name, err)
	}
	if s.mon, err = transport.Connect(zctx, zmq.PAIR, monAddr, transport.Options{}); err != nil {
		return nil, fmt.Errorf("monitor pipe for %s: %w", ep.name, err)
	}
	if err = s.sub.Connect(ep.addr(1)); err != nil {
		return nil, fmt.Errorf("connect subscriber to %s: %w", ep.addr(1), err)
	}
	wopts := transport.Options{SndHWM: o.PushSndHWM, Linger: o.Linger, CurveClient: o.Curve}
	if o.Collector == CollectorSub {
		if s.push, err = transport.NewSocket(zctx, zmq.XPUB, wopts); err != nil {
			return nil, fmt.Errorf("updates socket for %s: %w", ep.name, err)
		}
		// At the high-water mark, EAGAIN (ErrBackpressure) instead of a
		// silent drop, as the PUSH does.
		if err = s.push.SetXpubNodrop(true); err != nil {
			return nil, fmt.Errorf("updates socket for %s: %w", ep.name, err)
		}
		if err = s.push.Connect(ep.addr(2)); err != nil {
			return nil, fmt.Errorf("connect updates socket to %s: %w", ep.addr(2), err)
		}
		return s, nil
	}
	if s.push, err = transport.Connect(zctx, zmq.PUSH, ep.addr(2), wopts); err != nil {
		return nil, fmt.Errorf("updates socket for %s: %w", ep.name, err)
	}
	s.pubSub = true // a PUSH queues until connected
	return s, nil
}

// newDealer replaces the DEALER with a fresh one, so that nothing of an
// abandoned snapshot can be mistaken for the next one.
func (s *session) newDealer(zctx *zmq.Context, o *Options) error {
	s.closeDealer()
	d, err := transport.Connect(zctx, zmq.DEALER, s.ep.addr(0), transport.Options{CurveClient: o.Curve})
	if err != nil {
		return fmt.Errorf("snapshot socket for %s: %w", s.ep.name, err)
	}
	s.dealer, s.dealerRx = d, transport.NewReceiver(d)
	return nil
}

func (s *session) closeDealer() {
	if s.dealer != nil {
		s.dealer.Close()
		s.dealer, s.dealerRx = nil, nil
	}
}

// close closes every socket (with transport.MinLinger, except the PUSH,
// which lingers Options.Linger to hand over queued updates).
//
// The SUB's monitor is stopped first, while its PAIR is still open. libzmq
// (4.3) sends monitor events from the context's I/O thread with a blocking
// send, and closing the SUB does not stop its connecter or session at once:
// they end later, on the reaper's word. An event they raise meanwhile (a
// connect retried every ReconnectIVL while the server is down) that finds
// the PAIR closed blocks the I/O thread forever, and with it every socket
// of the client's context: it never connects again ("no connection within
// 3s" for good; seen for a few clients of a 300-client herd across a server
// restart; zeromq/libzmq#3575). Stopping the monitor closes libzmq's end
// of the pipe under its monitor lock, so no event can be sent after it.
func (s *session) close() error {
	var errs []error
	if s.sub != nil {
		if err := s.sub.Monitor("", 0); err != nil {
			errs = append(errs, fmt.Errorf("stop the subscriber's monitor: %w", err))
		}
	}
	for _, p := range []**zmq.Socket{&s.dealer, &s.sub, &s.mon, &s.push} {
		if *p != nil {
			if err := (*p).Close(); err != nil {
				errs = append(errs, err)
			}
			*p = nil
		}
	}
	s.dealerRx, s.subRx = nil, nil
	return errors.Join(errs...)
}
