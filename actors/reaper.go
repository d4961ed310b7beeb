package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport/adapter"
)

// ReaperTick asks the reaper to expire what is due.
type ReaperTick struct{}

// DefaultExpiryRate is the reaper's default bound on expiries proposed per
// second (server.Config.ExpiryRate, clonesrv --expiry-rate).
//
// Why a rate and not only credits: an expiry batch's credit comes back once
// the PUB socket has queued the batch, not once subscribers have read it, so
// credits pace expiries to the server's own speed (raft, store, publisher:
// 60,000–140,000 keys/s on the 2-core test machine), and nothing in ZeroMQ
// tells a PUB how far behind a subscriber is. A subscriber slower than that
// fills its --pub-hwm (10,000 by default) within a fraction of a second of a
// mass expiry and loses updates. 20,000 keys/s is the sustained rate this
// project's benchmarks hold subscribers to (the latency cases publish 20,000
// updates/s), far below what a raw SUB reads on that machine even with its
// cores busy (220,000–300,000 messages/s, measured), so a subscriber that
// keeps up with client updates keeps up with expiries too; 200,000 keys
// that expire together are deleted over 10 s. Redis bounds its active
// expiry per cycle for the same reason.
const DefaultExpiryRate = 20_000

// Reaper owns the expiry index: a min-heap of the keys that have a ttl,
// ordered by absolute expiry and indexed by key, so an overwrite or delete
// moves or removes the key's entry in O(log n). It follows the store as a
// Committed handler on every node and, on the leader only, proposes the
// expiry of what is due through the log (the deadline itself travelled in
// the log with the update). A tick costs O(expired · log n): keys without a
// ttl are never looked at.
//
// Pacing: at most one batch of Batch keys is in flight; it holds one of the
// collector's credits (Credits, shared with the collector's reader: Go
// serves the waiters of a credit in turn, so a mass expiry neither starves
// client updates nor is starved by them) until the publisher has written
// it, and batches leave at most Rate keys per second apart. Client updates
// keep flowing between them.
//
// A key leaves the index when the store commits its expiry (or an update
// of the key), not when it is proposed: a batch that is dropped (the log
// failed, leadership moved) is put back and proposed again by whichever
// node leads, so a new leader carries on from its own index.
type Reaper struct {
	Proposer *actor.PID
	Interval time.Duration // tick; default 100ms
	Batch    int           // keys per expiry batch; default 256
	// Credits, when set, is the collector's credit pool; each batch holds
	// one credit from proposal until it is published.
	Credits *adapter.Credits
	// Rate bounds expiries proposed per second (default DefaultExpiryRate;
	// negative: no bound beyond the credits).
	Rate  int
	Stats *stats.Server // optional: the expiry gauges
	Now   func() time.Time

	idx       expiryIndex
	inflight  map[string]struct{} // keys of the batch in flight whose expiry is not committed yet
	sent      []pendingExpiry     // that batch, to put back what did not commit
	t         *ticker
	stop      chan struct{}
	wake      *time.Timer
	waking    bool      // wake is armed
	next      time.Time // when the rate lets the next batch leave
	counted   time.Time // when the backlog was last counted
	follower  bool      // told another node leads (zero value: leader, a single node)
	term      uint64
	gen       uint64 // bumped when leadership changes: outdated grants and dones are ignored
	busy      bool   // a batch is in flight
	acquiring bool   // waiting for a credit
}

// pendingExpiry is a key taken from the index for a batch.
type pendingExpiry struct {
	key     string
	seq, at int64
}

// expireDone is the reaper's batch coming back (published or dropped).
type expireDone struct{ gen uint64 }

// creditGranted: the reaper's acquire goroutine got a collector credit.
type creditGranted struct{ gen uint64 }

// reaperWake ends a wait for the rate.
type reaperWake struct{}

// Receive handles *Committed (index maintenance), *Leadership, *ReaperTick
// and the reaper's own messages.
func (r *Reaper) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.init(ctx)
	case *Committed:
		if m.Restored != nil {
			r.idx.rebuild(m.Restored)
			clear(r.inflight)
		}
		for i := range m.Updates {
			u := &m.Updates[i]
			delete(r.inflight, string(u.Msg.Key))
			r.idx.track(u)
		}
		r.gauges(false)
	case *Leadership:
		r.lead(ctx, m)
	case *ReaperTick:
		r.expire(ctx)
		r.gauges(true)
	case *reaperWake:
		r.waking = false
		r.expire(ctx)
	case *creditGranted:
		if m.gen != r.gen || !r.acquiring {
			r.Credits.Release()
			return
		}
		r.acquiring = false
		r.send(ctx, r.Credits.Release)
	case *expireDone:
		if m.gen != r.gen {
			return
		}
		r.busy = false
		// What did not commit is proposed again at the next tick, not at
		// once: a log that drops everything (failed, or no longer ours)
		// must not be retried in a tight loop.
		if r.putBack() == 0 {
			r.expire(ctx)
		}
	case *actor.Stopping:
		close(r.stop)
		r.t.Stop()
		if r.wake != nil {
			r.wake.Stop()
		}
	}
}

func (r *Reaper) init(ctx actor.Context) {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Interval <= 0 {
		r.Interval = 100 * time.Millisecond
	}
	if r.Batch <= 0 {
		r.Batch = 256
	}
	if r.Rate == 0 {
		r.Rate = DefaultExpiryRate
	}
	if r.inflight == nil {
		r.inflight = make(map[string]struct{})
	}
	if r.stop == nil {
		r.stop = make(chan struct{})
	}
	if r.t == nil {
		r.t = startTicker(ctx.ActorSystem().Root, ctx.Self(), r.Interval, func() any { return &ReaperTick{} })
	}
	if r.Stats != nil {
		r.Stats.ExpiryRate.Store(int64(max(r.Rate, 0)))
	}
}

// lead records who leads. A batch in flight under the previous leadership
// is let go (its keys go back into the index; its credit still returns when
// it is published or dropped); a new leader proposes what is due at once.
func (r *Reaper) lead(ctx actor.Context, m *Leadership) {
	if m.Self == !r.follower && m.Term == r.term {
		return
	}
	r.follower, r.term = !m.Self, m.Term
	r.gen++
	r.busy, r.acquiring = false, false
	r.putBack()
	r.next = time.Time{}
	r.expire(ctx)
	r.gauges(true)
}

// expire starts the next batch when this node leads, nothing is in flight,
// something is due and the rate allows it.
func (r *Reaper) expire(ctx actor.Context) {
	if r.follower || r.busy || r.acquiring {
		return
	}
	now := r.Now()
	if !r.idx.due(now.UnixNano()) {
		return
	}
	if r.Rate > 0 && now.Before(r.next) {
		r.sleep(ctx, r.next.Sub(now))
		return
	}
	if r.Credits == nil {
		r.send(ctx, nil)
		return
	}
	// Wait for a credit in turn with the collector's reader, on a goroutine
	// the reaper owns (it ends when the reaper stops).
	r.acquiring = true
	gen, self, root, credits, stop := r.gen, ctx.Self(), ctx.ActorSystem().Root, r.Credits, r.stop
	go func() {
		if credits.Acquire(stop) {
			root.Send(self, &creditGranted{gen: gen})
		}
	}()
}

// send proposes the keys due now, at most Batch; release returns the
// batch's credit (nil: none held).
func (r *Reaper) send(ctx actor.Context, release func()) {
	now := r.Now()
	r.sent = r.sent[:0]
	r.idx.popDue(now.UnixNano(), r.Batch, func(key string, seq, at int64) {
		r.sent = append(r.sent, pendingExpiry{key: key, seq: seq, at: at})
	})
	if len(r.sent) == 0 {
		if release != nil {
			release()
		}
		return
	}
	items := make([]ExpireItem, len(r.sent))
	for i, p := range r.sent {
		items[i] = ExpireItem{Key: []byte(p.key), Seq: p.seq}
		r.inflight[p.key] = struct{}{}
	}
	if r.Rate > 0 {
		r.next = later(r.next, now).Add(time.Duration(len(items)) * time.Second / time.Duration(r.Rate))
	}
	r.busy = true
	gen, self, root := r.gen, ctx.Self(), ctx.ActorSystem().Root
	ctx.Send(r.Proposer, &Expire{Items: items, Done: func() {
		if release != nil {
			release()
		}
		root.Send(self, &expireDone{gen: gen})
	}})
	if r.Stats != nil {
		r.Stats.ExpiriesProposed.Add(int64(len(items)))
	}
}

// putBack returns to the index the keys of the last batch whose expiry was
// not committed (and that no later update touched), and says how many.
func (r *Reaper) putBack() int {
	n := 0
	for _, p := range r.sent {
		if _, pending := r.inflight[p.key]; pending && !r.idx.has(p.key) {
			r.idx.push(p.key, p.seq, p.at)
			n++
		}
	}
	clear(r.inflight)
	r.sent = r.sent[:0]
	return n
}

// sleep wakes the reaper after d (once: a wake already armed stands).
func (r *Reaper) sleep(ctx actor.Context, d time.Duration) {
	if r.waking {
		return
	}
	r.waking = true
	self, root := ctx.Self(), ctx.ActorSystem().Root
	if r.wake == nil {
		r.wake = time.AfterFunc(d, func() { root.Send(self, &reaperWake{}) })
		return
	}
	r.wake.Reset(d)
}

// gauges publishes the index size and, with backlog, the keys due and not
// yet expired. Counting those costs O(due), so while some are due it is
// done at most once a second (a few milliseconds for a million due keys).
func (r *Reaper) gauges(backlog bool) {
	if r.Stats == nil {
		return
	}
	r.Stats.ExpiryIndexKeys.Store(int64(r.Len()))
	if !backlog {
		return
	}
	now := r.Now()
	switch {
	case len(r.inflight) == 0 && !r.idx.due(now.UnixNano()):
		r.Stats.ExpiryBacklog.Store(0)
	case now.Sub(r.counted) >= time.Second:
		r.counted = now
		r.Stats.ExpiryBacklog.Store(int64(r.Backlog(now)))
	}
}

// Len returns the number of keys with a pending expiry.
func (r *Reaper) Len() int { return r.idx.Len() + len(r.inflight) }

// Backlog returns the number of keys due at now whose expiry is not
// committed yet (proposed or not).
func (r *Reaper) Backlog(now time.Time) int {
	return r.idx.countDue(now.UnixNano()) + len(r.inflight)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
