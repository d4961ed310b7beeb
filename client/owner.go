package client

import (
	"fmt"
	"log/slog"
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
	stAdvert                  // handshake done; waiting (briefly) for a first HUGZ to learn whether the server can resume
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
	askedAt  time.Time // when the request in flight was sent
	joinMsgs int       // snapshot messages received in this join
	joinHist string    // the history property of the snapshot's KTHXBAI
	bad      badInput
	rq       resumeReq // the request in flight: plain or resume
	reply    []kvmsg.Msg
	replyOK  bool          // reply holds every message of the reply so far (see readSnapshot)
	replyTop int64         // the highest sequence in reply
	joinLen  int64         // bytes of the reply so far
	plainWhy string        // set: this join asks plainly, for this reason (a resume reply was unusable, Resync)
	retryAt  time.Time     // stRetry: when to ask again
	retry    time.Duration // the next refused-request backoff

	lastApplied int64
	history     string // the history id of the map held ("": unknown)
	tailMark    int64  // a HUGZ said the server was here, above lastApplied

	adverts []advert // per endpoint: what it said about resume

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
		adverts: make([]advert, len(c.eps)),
		history: c.opts.SinceHistory, lastApplied: c.opts.Since,
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
	case stConnecting, stAdvert, stSnapshot:
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
	case stAdvert:
		if now.After(o.deadline) {
			o.log.Debug("no HUGZ before asking: a whole snapshot", "server", o.sess.ep.name)
			o.requestSnapshot()
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
				o.ask()
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
