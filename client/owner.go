package client

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// state is where the owner is in joining and following one endpoint.
type state int

const (
	stIdle       state = iota // no sockets: waiting for the backoff to pass
	stConnecting              // sockets made; waiting for the SUB's handshake
	stSnapshot                // ICANHAZ? sent; receiving KVSYNC until KTHXBAI
	stRetry                   // the server refused the snapshot: asking again at retryAt
	stFollowing               // applying updates as they come
)

// Tuning of the owner loop.
const (
	tick         = 250 * time.Millisecond // longest poll: deadlines are checked at least this often
	subBatch     = 1024                   // updates read (and applied under one lock) per wakeup
	dealerBatch  = 4096                   // snapshot messages read per wakeup, so the SUB is served too
	backoffFirst = 50 * time.Millisecond  // wait after every endpoint failed once...
	backoffMax   = time.Second            // ...doubling up to this
	retryFirst   = 100 * time.Millisecond // wait after a refused snapshot request...
	retryMax     = 2 * time.Second        // ...doubling up to this, each with jitter
)

// owner is the one goroutine that owns every socket of a Client and the
// only writer of its map. API goroutines reach it through Client.reqs and
// the wake pipe.
type owner struct {
	c      *Client
	o      *Options
	log    *slog.Logger
	wakeRx *zmq.Socket
	strict bool // every sequence is visible, so gaps are detectable

	st           state
	sess         *session
	ep           int // the endpoint to use next / in use
	syncedEP     int // the endpoint of the last completed join (-1: none)
	failures     int // consecutive endpoint failures, for the backoff
	backoff      time.Duration
	backoffUntil time.Time
	deadline     time.Time // stConnecting / stSnapshot: give up at
	lastHeard    time.Time // stFollowing: last message on the SUB
	resyncing    bool      // EventResyncStarted sent, EventResyncDone not yet
	monSeq       int

	// The join in progress.
	next     *kvmap.Map
	pending  []kvmsg.Msg // updates received while the snapshot streams
	missTop  int64       // highest sequence known lost on the SUB during the join
	joinFrom time.Time
	joinMsgs int    // snapshot messages received in this join
	joinHist string // the history property of the snapshot's KTHXBAI
	bad      badInput
	retryAt  time.Time     // stRetry: when to ask again
	retry    time.Duration // the next refused-request backoff

	lastApplied int64
	history     string // the history id of the map held ("": unknown)
	tailMark    int64  // a HUGZ said the server was here, above lastApplied

	watchers map[*watcher]struct{}
	waiters  map[[16]byte]*waiter
	seen     []*waiter // waiters whose echo arrived, not yet applied
	events   []Event   // built under the lock, delivered after it
}

func newOwner(c *Client, wakeRx *zmq.Socket) *owner {
	o := &owner{
		c: c, o: &c.opts, log: c.log, wakeRx: wakeRx,
		strict:   c.opts.Filter == FilterLocal || c.opts.Subtree == "",
		syncedEP: -1, backoff: backoffFirst, retry: retryFirst,
		watchers: make(map[*watcher]struct{}), waiters: make(map[[16]byte]*waiter),
	}
	return o
}

func (o *owner) run() {
	defer close(o.c.done)
	defer o.shutdown()
	for {
		select {
		case <-o.c.stop:
			return
		default:
		}
		now := time.Now()
		if o.st == stIdle && !now.Before(o.backoffUntil) {
			o.open()
		}
		if o.st == stRetry && !now.Before(o.retryAt) {
			o.next, o.joinMsgs = kvmap.New(), 0
			o.requestSnapshot()
		}
		o.flushHeld()
		o.checkDeadlines(now)
		for w := range o.watchers {
			w.flush()
		}

		poller := zmq.NewPoller()
		poller.Add(o.wakeRx, zmq.POLLIN)
		var sub, mon, dealer, xpub *zmq.Socket
		if s := o.sess; s != nil {
			sub, mon = s.sub, s.mon
			poller.Add(sub, zmq.POLLIN)
			poller.Add(mon, zmq.POLLIN)
			if o.o.Collector == CollectorSub {
				xpub = s.push
				poller.Add(xpub, zmq.POLLIN)
			}
			if o.st == stSnapshot && s.dealer != nil {
				dealer = s.dealer
				poller.Add(dealer, zmq.POLLIN)
			}
		}
		polled, err := poller.Poll(o.pollTimeout(now))
		if err != nil {
			if transport.IsTerm(err) {
				return
			}
			if !transport.IsInterrupted(err) {
				o.log.Error("poll failed", "err", err)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		// Handle in a fixed order; a handler may close the session, so each
		// socket is checked against the live session before use.
		ready := map[*zmq.Socket]bool{}
		for _, p := range polled {
			ready[p.Socket] = true
		}
		if ready[o.wakeRx] {
			o.drainWake()
			o.handleRequests()
		}
		if ready[xpub] && o.sess != nil && o.sess.push == xpub {
			o.readCollectorSubs()
		}
		if ready[mon] && o.sess != nil && o.sess.mon == mon {
			o.readMonitor()
		}
		if ready[sub] && o.sess != nil && o.sess.sub == sub {
			o.readSub()
		}
		if ready[dealer] && o.sess != nil && o.sess.dealer == dealer && o.st == stSnapshot {
			o.readSnapshot()
		}
	}
}

func (o *owner) pollTimeout(now time.Time) time.Duration {
	d := tick
	switch o.st {
	case stIdle:
		d = min(d, o.backoffUntil.Sub(now))
	case stConnecting, stSnapshot:
		d = min(d, o.deadline.Sub(now))
	case stRetry:
		d = min(d, o.retryAt.Sub(now), o.deadline.Sub(now))
	case stFollowing:
		if o.silenceArmed() {
			d = min(d, o.lastHeard.Add(o.o.HeartbeatTimeout).Sub(now))
		}
	}
	return max(d, 0)
}

func (o *owner) checkDeadlines(now time.Time) {
	switch o.st {
	case stConnecting:
		if now.After(o.deadline) {
			o.c.cnt.timeouts.Add(1)
			o.fail(fmt.Sprintf("no connection to %s within %v", o.sess.ep.name, o.o.JoinTimeout), true)
		}
	case stSnapshot, stRetry:
		if now.After(o.deadline) {
			o.c.cnt.timeouts.Add(1)
			if o.bad.n > 0 {
				o.fail(fmt.Sprintf("%s (no valid snapshot from %s within %v)", o.bad, o.sess.ep.name, o.o.JoinTimeout), true)
				return
			}
			o.fail(fmt.Sprintf("snapshot from %s stalled for %v after %d messages", o.sess.ep.name, o.o.JoinTimeout, o.joinMsgs), true)
		}
	case stFollowing:
		if o.silenceArmed() && now.Sub(o.lastHeard) > o.o.HeartbeatTimeout {
			o.c.cnt.timeouts.Add(1)
			o.fail(fmt.Sprintf("nothing from %s for %v (not even HUGZ)", o.sess.ep.name, o.o.HeartbeatTimeout), true)
		}
	}
}

// silenceArmed: silence means death only from a server that has shown it
// sends HUGZ, on this connection. One that never did (the Guide's Model
// Five, clonesrv --hugz 0) may simply be idle; its death shows as a dropped
// connection (ZMTP heartbeats on the SUB, see Options.HeartbeatTimeout).
func (o *owner) silenceArmed() bool {
	return o.o.HeartbeatTimeout > 0 && o.sess != nil && o.sess.hugzSeen
}

// aliveWhileWaiting extends the join deadline when the server shows it is
// alive (anything on the SUB) while the client waits for a snapshot that
// has not started: a server that queues joiners, or refused one, is busy,
// not gone.
func (o *owner) aliveWhileWaiting(now time.Time) {
	if (o.st == stSnapshot && o.joinMsgs == 0) || o.st == stRetry {
		if d := now.Add(o.o.JoinTimeout); d.After(o.deadline) {
			o.deadline = d
		}
	}
}

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

func (o *owner) drainWake() {
	for {
		if _, err := o.wakeRx.RecvBytes(zmq.DONTWAIT); err != nil {
			return
		}
	}
}

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
				o.rejoin("requested by the application")
			}
		}
	}
}

// readMonitor acts on the SUB's connection events.
func (o *owner) readMonitor() {
	for o.sess != nil {
		ev, _, _, err := o.sess.mon.RecvEvent(zmq.DONTWAIT)
		if err != nil {
			return
		}
		s := o.sess
		switch ev {
		case zmq.EVENT_HANDSHAKE_SUCCEEDED:
			s.subReady = true
			if o.st == stConnecting {
				o.requestSnapshot()
			}
		case zmq.EVENT_CONNECT_RETRIED:
			if !s.subReady {
				o.fail(fmt.Sprintf("cannot connect to %s (connection refused or unreachable)", s.ep.addr(1)), true)
			}
		case zmq.EVENT_DISCONNECTED:
			o.c.cnt.disconnects.Add(1)
			o.fail(fmt.Sprintf("connection to %s lost", s.ep.addr(1)), !s.subReady)
		case zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH:
			o.fail(fmt.Sprintf("handshake with %s failed (%v): check CURVE keys and server security", s.ep.addr(1), ev), true)
		}
	}
}

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
			if o.heartbeat(m) {
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
		case stConnecting, stSnapshot, stRetry:
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
				o.c.cnt.gaps.Add(1)
				unlock()
				o.rejoin(fmt.Sprintf("updates %d..%d lost", o.lastApplied+1, m.Seq-1))
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
	o.syncedEP = s.idx
	o.resyncing = false
	o.log.Info("joined", "server", s.ep.name, "subtree", o.o.Subtree, "seq", last, "keys", newView.Len(), "took", took.Round(time.Millisecond))
	o.flushEvents()
	o.resolveWaiters()
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

func (o *owner) emit(ev Event) {
	o.events = append(o.events, ev)
	o.flushEvents()
}

func (o *owner) flushEvents() {
	if len(o.events) == 0 {
		return
	}
	for w := range o.watchers {
		for _, ev := range o.events {
			if w.deliver(ev) {
				o.c.cnt.eventsLost.Add(1)
			}
		}
	}
	clear(o.events)
	o.events = o.events[:0]
}

func (o *owner) shutdown() {
	if o.sess != nil {
		o.sess.close()
		o.sess = nil
	}
	o.wakeRx.Close()
	<-o.c.wdone
	for w := range o.watchers {
		w.close()
	}
	if err := o.c.zctx.Term(); err != nil {
		o.log.Warn("zmq context term", "err", err)
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

// updateEvent is the event for an update or a KVSYNC received at now. Its
// TTL is what remains of the key's ttl, whichever form the server sent it
// in (kvmsg.Msg.Deadline); a deadline already passed reads as 1ns, as the
// key is still there until the server's delete arrives.
func updateEvent(m kvmsg.Msg, now time.Time) Event {
	ev := Event{Type: EventUpdate, Key: string(m.Key), Value: m.Body, Seq: m.Seq}
	if m.IsDelete() {
		ev.Type, ev.Value = EventDelete, nil
		return ev
	}
	if at, err := m.Deadline(now); err == nil && !at.IsZero() {
		ev.TTL = max(at.Sub(now), time.Nanosecond)
	}
	return ev
}
