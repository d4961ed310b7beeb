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
	o.plainWhy = ""
	o.bad = badInput{}
	o.tailMark = 0
	o.joinFrom = time.Now()
}

// requestSnapshot sends ICANHAZ? on a fresh DEALER: the resume request
// (three frames) when the endpoint advertised resume for the history of
// the map held, else the plain two frames (see plan). The SUB is already
// connected (and subscribed) by now, so no update can fall between the
// snapshot and the stream unnoticed. Whatever an earlier request of this
// join received (a refused or abandoned one) is dropped.
func (o *owner) requestSnapshot() {
	s := o.sess
	if err := s.newDealer(o.c.zctx, o.o); err != nil {
		o.fail(err.Error(), true)
		return
	}
	o.next, o.joinMsgs, o.joinLen = kvmap.New(), 0, 0
	clear(o.reply)
	o.reply, o.replyOK, o.replyTop = o.reply[:0], true, 0
	o.rq = o.plan()
	frames := [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(o.o.Subtree)}
	if o.rq.resume {
		frames = append(frames, resumeProps(o.rq.history, o.rq.since))
		o.replyTop = o.rq.since
	}
	if err := transport.SendMessage(s.dealer, frames, zmq.DONTWAIT); err != nil {
		o.fail(fmt.Sprintf("send %s to %s: %v", kvmsg.CmdSnapshot, s.ep.name, err), true)
		return
	}
	o.askedAt = time.Now()
	o.log.Debug("snapshot requested", "server", s.ep.name, "resume", o.rq.resume, "since", o.rq.since, "why_not", o.rq.why)
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
	o.next, o.pending, o.reply = nil, nil, nil
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

// refetch is rejoin with a whole snapshot, never a resume (Client.Resync:
// the application distrusts the map itself).
func (o *owner) refetch(reason string) {
	o.log.Info("re-joining", "server", o.sess.ep.name, "reason", reason)
	o.startResync(reason)
	o.resetJoin()
	o.plainWhy = whyRequested
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

// readSnapshot reads the reply into the next map (which copies what it
// takes) until KTHXBAI. In reply to a resume request it also keeps the
// messages, in order, as long as they can be a delta (sequences increasing
// above since): only the KTHXBAI says which it was. A whole snapshot shows
// itself early (KVSYNCs in key order carry sequences that do not increase,
// or not above since), and keeping stops there.
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
		for _, f := range frames {
			o.joinLen += int64(len(f))
		}
		m, keep, ok := o.decode(frames)
		if !ok {
			o.notDelta()
			continue
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			if why, refused := m.Prop(propRefused); refused {
				o.refused(why)
				return
			}
			o.noteAdvert(s.idx, m.Props)
			o.joinHist, _ = m.Prop(propHistory)
			o.finishJoin(m)
			return
		}
		o.noteEcho(m)
		if o.rq.resume && o.replyOK {
			if m.Seq > o.replyTop {
				// Can still be a delta: kept only (applied to the next
				// map if it turns out not to be).
				o.replyTop = m.Seq
				if !keep {
					m = kvmsg.Msg{Seq: m.Seq}
				}
				o.reply = append(o.reply, cloneMsg(m))
				continue
			}
			o.notDelta()
		}
		if keep && len(m.Body) > 0 {
			o.next.Apply(m)
		}
	}
}

// notDelta: the reply is a whole snapshot (or unusable as a delta): what
// was kept goes into the next map, and keeping stops.
func (o *owner) notDelta() {
	if !o.replyOK {
		return
	}
	o.replyOK = false
	for i, m := range o.reply {
		if len(m.Key) > 0 && len(m.Body) > 0 {
			o.next.Apply(m)
		}
		o.reply[i] = kvmsg.Msg{}
	}
	o.reply = o.reply[:0]
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

// finishJoin completes a join at the KTHXBAI end: it checks that no
// update after it was lost, applies the reply (a delta to the map held; a
// whole snapshot replaces it) and the buffered updates above it, and tells
// watchers what changed.
func (o *owner) finishJoin(end kvmsg.Msg) {
	s := o.sess
	snapSeq := end.Seq
	delta, reason, bad := o.replyVerdict(end)
	if bad != "" {
		// Unusable: never resume from this endpoint again; ask it plainly.
		o.c.cnt.malformed.Add(1)
		if o.c.drops.add(reasonResumeReply, time.Now()) {
			o.log.Warn("unusable resume reply; asking for a whole snapshot", "server", s.ep.name, "problem", bad)
		}
		o.adverts[s.idx].broken = true
		o.resetJoin()
		o.plainWhy = whyBadDelta
		o.requestSnapshot()
		return
	}
	if o.strict && o.missTop > snapSeq {
		o.c.cnt.gaps.Add(1)
		o.rejoin(fmt.Sprintf("updates up to %d lost while joining at %d", o.missTop, snapSeq))
		return
	}
	// The updates the SUB buffered meanwhile, above the reply's sequence.
	tail := o.pending[:0:0]
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
		tail = append(tail, m)
	}
	s.closeDealer()
	took := time.Since(o.joinFrom)
	first := o.syncedEP < 0
	if !first && o.syncedEP != s.idx {
		o.c.cnt.switches.Add(1)
		o.events = append(o.events, Event{Type: EventServerSwitched, Server: s.ep.name, From: o.c.eps[o.syncedEP].name})
		o.log.Warn("now following another server", "server", s.ep.name, "from", o.c.eps[o.syncedEP].name)
	}
	// Per-key events go to watchers only: a re-join nobody watches builds
	// none. The first join builds none either, unless it resumes after
	// Options.Since (which is what its watcher asked for).
	watch := len(o.watchers) > 0 && (!first || o.o.Since > 0)
	subtree := []byte(o.o.Subtree)
	var newView *kvmap.View
	var old *kvmap.Map
	oldHist := o.history
	reset := !first && oldHist != "" && o.joinHist != "" && oldHist != o.joinHist
	if !delta {
		o.notDelta() // a whole snapshot whose sequences happened to increase
	}
	if delta {
		o.next = nil
		if watch {
			o.events = append(o.events, Event{Type: EventResumed, Seq: snapSeq, Since: o.rq.since, Server: s.ep.name})
		}
		o.applyInPlace(o.reply, subtree, watch)
		o.applyInPlace(tail, subtree, watch)
		o.c.mu.Lock()
		newView = o.c.m.View()
	} else {
		for _, m := range tail {
			if len(m.Key) > 0 && hasPrefix(m.Key, subtree) {
				o.next.Apply(m)
			}
		}
		newView = o.next.View() // before readers can see o.next
		o.c.mu.Lock()
		old = o.c.m
		o.c.m = o.next
	}
	o.c.seq = last
	o.c.synced = true
	o.c.server = s.ep.name
	o.c.history = o.joinHist
	// The join's counters change under the same lock as the map, so Stats
	// never shows the new map beside the old join counts.
	kind := joinSnapshot
	switch {
	case delta:
		kind = joinDelta
	case !first || o.o.Since > 0:
		kind = joinFull
	}
	o.c.cnt.joins.Add(1)
	if reset {
		o.c.cnt.resets.Add(1)
	}
	o.c.noteJoin(JoinStats{Kind: kind, Reason: reason, Since: o.rq.since, Seq: last, Messages: int64(o.joinMsgs), Bytes: o.joinLen,
		Took: time.Since(o.askedAt), Connect: o.askedAt.Sub(o.joinFrom)})
	close(o.c.syncedCh)
	o.c.mu.Unlock()

	o.next, o.pending = nil, nil
	clear(o.reply)
	o.reply = o.reply[:0]
	o.lastApplied = last
	o.lastHeard = time.Now()
	o.st = stFollowing
	o.failures = 0
	o.backoff = backoffFirst
	o.retry = retryFirst
	o.tailMark = 0
	o.history = o.joinHist
	if reset {
		o.log.Warn("server holds another history: starting over from its map", "server", s.ep.name, "history", o.joinHist, "was", oldHist)
	}
	if watch && !delta {
		switch {
		case reset:
			// Another map, not a later state of ours: one reset, then the
			// new map as updates (no deletes for the old one's keys).
			o.events = append(o.events, Event{Type: EventReset, Seq: last, Server: s.ep.name, Reason: fmt.Sprintf("history %s replaced %s", o.joinHist, oldHist)})
			now := time.Now()
			newView.Ascend(subtree, func(e kvmap.Entry) bool {
				o.events = append(o.events, updateEvent(e.Msg(), now))
				return true
			})
		default:
			o.events = append(o.events, Event{Type: EventFull, Seq: last, Server: s.ep.name, Reason: reason})
			diff(old.View(), newView, subtree, last, &o.events)
		}
	}
	o.events = append(o.events, Event{Type: EventResyncDone, Seq: last, Keys: newView.Len(), Server: s.ep.name})
	if h := o.o.hooks.joinEvents; h != nil {
		h(len(o.events))
	}
	o.syncedEP = s.idx
	o.resyncing = false
	o.log.Info("joined", "server", s.ep.name, "subtree", o.o.Subtree, "seq", last, "keys", newView.Len(),
		"kind", kind, "reason", reason, "messages", o.joinMsgs, "bytes", o.joinLen, "took", took.Round(time.Millisecond))
	o.flushEvents()
	o.resolveWaiters()
}

// applyInPlace applies updates (a delta, then the subscriber's tail) to the
// map held, in order, a batch per write lock so that readers are never held
// up long. Each batch ends at a state the server had (every update of the
// subtree up to its last sequence is applied), so the sequence readers see
// moves with it; the client stays unsynced until the end.
func (o *owner) applyInPlace(msgs []kvmsg.Msg, subtree []byte, watch bool) {
	now := time.Now()
	for len(msgs) > 0 {
		n := min(len(msgs), subBatch)
		o.c.mu.Lock()
		for _, m := range msgs[:n] {
			if len(m.Key) == 0 || !hasPrefix(m.Key, subtree) {
				continue // a sequence only (over MaxKey, or outside the subtree)
			}
			o.c.m.Apply(m)
			o.c.cnt.updates.Add(1)
			if watch {
				o.events = append(o.events, updateEvent(m, now))
			}
		}
		o.c.seq = msgs[n-1].Seq
		o.c.mu.Unlock()
		msgs = msgs[n:]
	}
}
