package client

// Joining an endpoint: sockets, the snapshot request and stream, a refused
// request's retry, and the swap of the new map, with the events that tell
// watchers what changed. All of it runs in the owner goroutine.

import (
	"fmt"
	"math/rand/v2"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// open makes the sockets for the current endpoint and starts connecting.
func (o *owner) open() {
	ep := o.c.eps[o.ep]
	o.monSeq++
	s, err := openSession(o.c.zctx, ep, o.ep, o.o, o.strict, fmt.Sprintf("inproc://clonekv-client-monitor-%d", o.monSeq))
	if err != nil {
		o.fail(err.Error(), true)
		return
	}
	o.sess = s
	o.st = stConnecting
	o.deadline = time.Now().Add(o.o.JoinTimeout)
	o.resetJoin()
	o.c.mu.Lock()
	o.c.server = ep.name
	o.c.mu.Unlock()
	o.log.Debug("connecting", "server", ep.name)
}

func (o *owner) resetJoin() {
	o.next = kvmap.New()
	o.pending = nil
	o.missTop = 0
	o.joinMsgs = 0
	o.joinHist = ""
	o.bad = badInput{}
	o.tailMark = 0
	o.joinFrom = time.Now()
}

// requestSnapshot sends ICANHAZ? on a fresh DEALER. The SUB is already
// connected (and subscribed) by now, so no update can fall between the
// snapshot and the stream unnoticed.
func (o *owner) requestSnapshot() {
	s := o.sess
	if err := s.newDealer(o.c.zctx, o.o); err != nil {
		o.fail(err.Error(), true)
		return
	}
	if err := transport.SendMessage(s.dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(o.o.Subtree)}, zmq.DONTWAIT); err != nil {
		o.fail(fmt.Sprintf("send %s to %s: %v", kvmsg.CmdSnapshot, s.ep.name, err), true)
		return
	}
	o.st = stSnapshot
	o.deadline = time.Now().Add(o.o.JoinTimeout)
}

// fail abandons the session. moveOn goes to the next endpoint (the server is
// silent, refuses or does not answer); otherwise the same endpoint is joined
// again right away (it restarted, or the connection dropped).
func (o *owner) fail(reason string, moveOn bool) {
	o.log.Info("re-joining", "server", o.c.eps[o.ep].name, "reason", reason, "next_endpoint", moveOn && len(o.c.eps) > 1)
	o.retry = retryFirst
	o.startResync(reason)
	if o.sess != nil {
		if err := o.sess.close(); err != nil {
			o.log.Warn("closing sockets", "err", err)
		}
		o.sess = nil
	}
	o.st = stIdle
	o.next, o.pending = nil, nil
	if moveOn {
		o.ep = (o.ep + 1) % len(o.c.eps)
		o.failures++
		if o.failures >= len(o.c.eps) {
			// Every endpoint failed in a row: wait before the next round.
			o.failures = 0
			o.backoffUntil = time.Now().Add(o.backoff)
			o.backoff = min(2*o.backoff, backoffMax)
		}
	}
}

// rejoin fetches a fresh snapshot from the same server, keeping the SUB (it
// is connected and subscribed, and its stream simply continues) and the
// PUSH. Used when updates were lost.
func (o *owner) rejoin(reason string) {
	o.log.Info("re-joining", "server", o.sess.ep.name, "reason", reason)
	o.startResync(reason)
	o.resetJoin()
	o.requestSnapshot()
}

// startResync marks the map as untrusted and tells watchers, once per
// outage.
func (o *owner) startResync(reason string) {
	o.c.mu.Lock()
	o.c.lastErr = reason
	wasSynced := o.c.synced
	if wasSynced {
		o.c.synced = false
		o.c.syncedCh = make(chan struct{})
	}
	o.c.mu.Unlock()
	if wasSynced {
		o.c.cnt.resyncs.Add(1)
	}
	if !o.resyncing && o.syncedEP >= 0 {
		o.resyncing = true
		o.emit(Event{Type: EventResyncStarted, Reason: reason, Seq: o.lastApplied})
	}
}

// readSnapshot reads KVSYNCs into the next map (which copies them) until
// KTHXBAI.
func (o *owner) readSnapshot() {
	s := o.sess
	for i := 0; i < dealerBatch; i++ {
		frames, _, err := s.dealerRx.Recv(zmq.DONTWAIT)
		if err != nil {
			if !transport.IsAgain(err) && !transport.IsInterrupted(err) {
				o.log.Warn("receive snapshot", "server", s.ep.name, "err", err)
			}
			return
		}
		o.deadline = time.Now().Add(o.o.JoinTimeout)
		o.joinMsgs++ // valid or not: the server answered
		m, keep, ok := o.decode(frames)
		if !ok {
			continue
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			if why, refused := m.Prop(propRefused); refused {
				o.refused(why)
				return
			}
			o.joinHist, _ = m.Prop(propHistory)
			o.finishJoin(m.Seq)
			return
		}
		o.noteEcho(m)
		if keep && len(m.Body) > 0 {
			o.next.Apply(m)
		}
	}
}

// refused handles a KTHXBAI marked refused: the server is alive but will
// not stream a snapshot now (too many joins in flight, or it aborted ours).
// It is not a snapshot: ask the same server again after a backoff with
// jitter, doubling up to retryMax, keeping the SUB and what it buffered.
func (o *owner) refused(why string) {
	s := o.sess
	o.c.cnt.refused.Add(1)
	s.closeDealer()
	d := o.retry
	if h := o.o.hooks.retryBackoff; h > 0 && d == retryFirst {
		d = h
	}
	o.retry = min(2*o.retry, retryMax)
	wait := d/2 + time.Duration(rand.Int64N(int64(d))) // 0.5d to 1.5d
	now := time.Now()
	o.st = stRetry
	o.retryAt = now.Add(wait)
	o.deadline = o.retryAt.Add(o.o.JoinTimeout)
	reason := fmt.Sprintf("server %s refused the snapshot (%s); asking again in %v", s.ep.name, why, wait.Round(time.Millisecond))
	o.c.mu.Lock()
	o.c.lastErr = reason
	o.c.mu.Unlock()
	o.log.Debug("snapshot refused", "server", s.ep.name, "reason", why, "retry_in", wait)
}

// finishJoin completes a join at the snapshot's sequence: it checks that no
// update after it was lost, applies the buffered ones above it, swaps the
// map in, and tells watchers what changed.
func (o *owner) finishJoin(snapSeq int64) {
	s := o.sess
	if o.strict && o.missTop > snapSeq {
		o.c.cnt.gaps.Add(1)
		o.rejoin(fmt.Sprintf("updates up to %d lost while joining at %d", o.missTop, snapSeq))
		return
	}
	subtree := []byte(o.o.Subtree)
	last := snapSeq
	for _, m := range o.pending {
		if m.Seq <= last {
			continue
		}
		if o.strict && m.Seq != last+1 {
			o.c.cnt.gaps.Add(1)
			o.rejoin(fmt.Sprintf("updates %d..%d lost while joining", last+1, m.Seq-1))
			return
		}
		last = m.Seq
		if hasPrefix(m.Key, subtree) {
			o.next.Apply(m)
		}
	}
	s.closeDealer()
	took := time.Since(o.joinFrom)
	newView := o.next.View() // before readers can see o.next
	o.c.mu.Lock()
	old := o.c.m
	o.c.m = o.next
	o.c.seq = last
	o.c.synced = true
	o.c.server = s.ep.name
	o.c.history = o.joinHist
	close(o.c.syncedCh)
	o.c.mu.Unlock()

	first := o.syncedEP < 0
	o.next, o.pending = nil, nil
	o.lastApplied = last
	o.lastHeard = time.Now()
	o.st = stFollowing
	o.failures = 0
	o.backoff = backoffFirst
	o.retry = retryFirst
	o.tailMark = 0
	o.c.cnt.joins.Add(1)
	if !first && o.syncedEP != s.idx {
		o.c.cnt.switches.Add(1)
		o.events = append(o.events, Event{Type: EventServerSwitched, Server: s.ep.name, From: o.c.eps[o.syncedEP].name})
		o.log.Warn("now following another server", "server", s.ep.name, "from", o.c.eps[o.syncedEP].name)
	}
	oldHist := o.history
	o.history = o.joinHist
	reset := !first && oldHist != "" && o.joinHist != "" && oldHist != o.joinHist
	if reset {
		o.c.cnt.resets.Add(1)
		o.log.Warn("server holds another history: starting over from its map", "server", s.ep.name, "history", o.joinHist, "was", oldHist)
	}
	// Watchers only: a re-join nobody watches builds no per-key events.
	if !first && len(o.watchers) > 0 {
		if reset {
			// Another map, not a later state of ours: one reset, then the
			// new map as updates (no deletes for the old one's keys).
			o.events = append(o.events, Event{Type: EventReset, Seq: last, Server: s.ep.name, Reason: fmt.Sprintf("history %s replaced %s", o.joinHist, oldHist)})
			now := time.Now()
			newView.Ascend(subtree, func(e kvmap.Entry) bool {
				o.events = append(o.events, updateEvent(e.Msg(), now))
				return true
			})
		} else {
			diff(old.View(), newView, subtree, last, &o.events)
		}
	}
	o.events = append(o.events, Event{Type: EventResyncDone, Seq: last, Keys: newView.Len(), Server: s.ep.name})
	if h := o.o.hooks.joinEvents; h != nil {
		h(len(o.events))
	}
	o.syncedEP = s.idx
	o.resyncing = false
	o.log.Info("joined", "server", s.ep.name, "subtree", o.o.Subtree, "seq", last, "keys", newView.Len(), "took", took.Round(time.Millisecond))
	o.flushEvents()
	o.resolveWaiters()
}
