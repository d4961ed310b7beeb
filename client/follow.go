package client

// Following: the subscriber's stream, applied in batches under one write
// lock. Every decision that ends the batch (a gap, a restart, a HUGZ's
// verdict) releases the lock before acting on it.

import (
	"bytes"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// readSub reads a batch of updates. While joining they are buffered; while
// following they are applied under one write lock. A message's frames are
// the receiver's buffer, overwritten by the next Recv: the map copies what
// it applies, and buffered updates and watchers' events get their own copy.
func (o *owner) readSub() {
	if h := o.o.hooks.beforeSubRead; h != nil {
		h()
	}
	s := o.sess
	locked := false
	unlock := func() {
		if locked {
			o.c.seq = o.lastApplied
			o.c.mu.Unlock()
			locked = false
		}
	}
	defer func() {
		if !locked && o.c.seq != o.lastApplied && o.st == stFollowing {
			// Only keys outside the subtree moved the sequence.
			o.c.mu.Lock()
			locked = true
		}
		unlock()
		o.flushEvents()
		o.resolveWaiters()
	}()
	subtree := []byte(o.o.Subtree)
	for i := 0; i < subBatch && o.sess == s; i++ {
		frames, _, err := s.subRx.Recv(zmq.DONTWAIT)
		if err != nil {
			if !transport.IsAgain(err) && !transport.IsInterrupted(err) {
				o.log.Warn("receive update", "server", s.ep.name, "err", err)
			}
			return
		}
		now := time.Now()
		o.lastHeard = now
		m, keep, ok := o.decode(frames)
		if !ok {
			continue
		}
		o.aliveWhileWaiting(now)
		if string(m.Key) == kvmsg.KeyHeartbeat {
			// Recognised by its key, whatever its sequence: never applied,
			// never a restart (see heartbeat).
			o.c.cnt.heartbeats.Add(1)
			s.hugzSeen = true
			unlock()
			o.noteAdvert(s.idx, m.Props)
			if o.advertised() || o.heartbeat(m) {
				return
			}
			continue
		}
		if m.Seq <= 0 {
			continue // anything unsequenced
		}
		if s.rawPrev != 0 && m.Seq <= s.rawPrev {
			o.c.cnt.restarts.Add(1)
			unlock()
			o.fail(fmt.Sprintf("sequence went backwards from %d to %d: server restarted", s.rawPrev, m.Seq), false)
			return
		}
		rawGap := s.rawPrev == 0 || m.Seq > s.rawPrev+1
		s.rawPrev = m.Seq
		o.noteEcho(m)

		switch o.st {
		case stConnecting, stAdvert, stSnapshot, stRetry:
			if o.strict && rawGap {
				o.missTop = max(o.missTop, m.Seq-1)
			}
			if !keep {
				m = kvmsg.Msg{Seq: m.Seq} // its sequence only: nothing to store
			}
			o.pending = append(o.pending, cloneMsg(m))
			if len(o.pending) > o.o.MaxPending {
				o.fail(fmt.Sprintf("more than %d updates arrived while the snapshot streamed", o.o.MaxPending), false)
				return
			}
		case stFollowing:
			if m.Seq <= o.lastApplied {
				continue // published before our snapshot, which holds it
			}
			if o.strict && m.Seq != o.lastApplied+1 {
				unlock()
				o.rejoin(fmt.Sprintf("updates %d..%d lost", o.lastApplied+1, m.Seq-1))
				o.c.cnt.gaps.Add(1) // counted once Synced is false
				return
			}
			o.lastApplied = m.Seq
			if !keep || !hasPrefix(m.Key, subtree) {
				continue
			}
			if !locked {
				o.c.mu.Lock()
				locked = true
			}
			o.c.m.Apply(m)
			o.c.cnt.updates.Add(1)
			if len(o.watchers) > 0 { // events go to watchers only
				ev := updateEvent(m, now)
				ev.Value = bytes.Clone(ev.Value)
				o.events = append(o.events, ev)
			}
		}
	}
}

// cloneMsg copies m's bytes into one allocation of its own, for a message
// decoded from a receiver's buffer that must outlive the next receive.
func cloneMsg(m kvmsg.Msg) kvmsg.Msg {
	buf := make([]byte, 0, len(m.Key)+len(m.UUID)+len(m.Props)+len(m.Body))
	take := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	m.Key, m.UUID, m.Props, m.Body = take(m.Key), take(m.UUID), take(m.Props), take(m.Body)
	return m
}

func hasPrefix(key, prefix []byte) bool {
	return len(key) >= len(prefix) && string(key[:len(prefix)]) == string(prefix)
}
