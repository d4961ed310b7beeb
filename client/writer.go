package client

import (
	"fmt"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
)

// maxHeld bounds the writes held for a collector that has not subscribed
// yet when PushSndHWM is not set (libzmq's own default mark).
const maxHeld = 1000

// push sends one update to the server's collector: on the PUSH, or on the
// XPUB once the collector's subscription has arrived (held until then).
func (o *owner) push(r *setReq) error {
	s := o.sess
	if s == nil {
		return ErrNotConnected
	}
	frames := r.msg.Frames()
	if !s.pubSub {
		limit := o.o.PushSndHWM
		if limit <= 0 {
			limit = maxHeld
		}
		if len(s.held) >= limit {
			return ErrBackpressure
		}
		if r.w != nil {
			o.waiters[r.w.uuid] = r.w
		}
		s.held = append(s.held, heldWrite{frames: frames, key: r.msg.Key})
		return nil
	}
	if r.w != nil {
		o.waiters[r.w.uuid] = r.w
	}
	if err := transport.SendMessage(s.push, frames, zmq.DONTWAIT); err != nil {
		if r.w != nil {
			delete(o.waiters, r.w.uuid)
		}
		if transport.IsAgain(err) {
			return ErrBackpressure
		}
		return fmt.Errorf("clonekv client: send update of %q to %s: %w", r.msg.Key, s.ep.addr(2), err)
	}
	o.c.cnt.sent.Add(1)
	return nil
}

// readCollectorSubs reads the XPUB's (un)subscriptions from the server's
// collector and, once it is subscribed, sends the held writes.
func (o *owner) readCollectorSubs() {
	s := o.sess
	for {
		b, err := s.push.RecvBytes(zmq.DONTWAIT)
		if err != nil {
			break
		}
		if len(b) > 0 {
			s.pubSub = b[0] == 1
		}
	}
	o.flushHeld()
}

// flushHeld sends the held writes once the collector has subscribed.
func (o *owner) flushHeld() {
	s := o.sess
	if s == nil || !s.pubSub {
		return
	}
	for len(s.held) > 0 {
		h := s.held[0]
		if err := transport.SendMessage(s.push, h.frames, zmq.DONTWAIT); err != nil {
			if !transport.IsAgain(err) {
				o.log.Warn("send held update", "server", s.ep.name, "key", string(h.key), "err", err)
				s.held = s.held[1:]
				continue
			}
			return // the queue is full: the rest waits for the next wakeup
		}
		o.c.cnt.sent.Add(1)
		s.held[0] = heldWrite{}
		s.held = s.held[1:]
	}
}
