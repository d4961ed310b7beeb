package client

// Requests from API goroutines, and the SetWaits waiting for their echo.

import (
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
)

func (o *owner) handleRequests() {
	for {
		var r any
		select {
		case r = <-o.c.reqs:
		default:
			return
		}
		switch r := r.(type) {
		case *setReq:
			r.done <- o.push(r)
		case *watchReq:
			o.watchers[r.w] = struct{}{}
			r.ack <- struct{}{}
		case *unwatchReq:
			if _, ok := o.watchers[r.w]; ok {
				delete(o.watchers, r.w)
				r.w.close()
			}
		case forgetReq:
			delete(o.waiters, r.uuid)
		case resyncReq:
			if o.st == stFollowing {
				o.refetch("requested by the application")
			}
		}
	}
}

// noteEcho records the sequence of an update we sent, when it comes back.
func (o *owner) noteEcho(m kvmsg.Msg) {
	if len(o.waiters) == 0 || len(m.UUID) != kvmsg.UUIDLen {
		return
	}
	if w, ok := o.waiters[[16]byte(m.UUID)]; ok && w.seq == 0 {
		w.seq = m.Seq
		o.seen = append(o.seen, w)
	}
}

// resolveWaiters answers the SetWaits whose update is now in the map.
func (o *owner) resolveWaiters() {
	if o.st != stFollowing || len(o.seen) == 0 {
		return
	}
	kept := o.seen[:0]
	for _, w := range o.seen {
		if _, ok := o.waiters[w.uuid]; !ok {
			continue // forgotten
		}
		if w.seq <= o.lastApplied {
			w.ch <- w.seq
			delete(o.waiters, w.uuid)
			continue
		}
		kept = append(kept, w)
	}
	clear(o.seen[len(kept):])
	o.seen = kept
}

func (o *owner) drainWake() {
	for {
		if _, err := o.wakeRx.RecvBytes(zmq.DONTWAIT); err != nil {
			return
		}
	}
}
