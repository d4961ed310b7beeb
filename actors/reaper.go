package actors

import (
	"container/heap"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmap"
)

// ReaperTick asks the reaper to expire what is due.
type ReaperTick struct{}

// Reaper owns the expiry index: a min-heap of the keys that have a ttl,
// ordered by absolute expiry and indexed by key, so an overwrite or delete
// moves or removes the key's entry in O(log n). It follows the store as a
// Committed handler and, on each tick, proposes the expiry of what is due
// through the log (the deadline itself travelled in the log with the
// update). A tick costs O(expired · log n): keys without a ttl are never
// looked at, unlike the seed's scan of the whole map every second.
//
// Expiries are paced like client updates: at most one batch of Batch keys
// is in flight, the next one leaves when the publisher has written the
// last, so a mass expiry is spread over many small entries and client
// updates keep flowing between them.
type Reaper struct {
	Proposer *actor.PID
	Interval time.Duration // tick; default 100ms
	Batch    int           // keys per expiry batch; default 256
	Now      func() time.Time

	idx  expiryIndex
	t    *ticker
	busy bool // an expiry batch is in flight
}

// expireDone is the reaper's credit coming back.
type expireDone struct{}

// Receive handles *Committed (index maintenance), *ReaperTick and the
// return of its expiry batches.
func (r *Reaper) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if r.Now == nil {
			r.Now = time.Now
		}
		if r.Interval <= 0 {
			r.Interval = 100 * time.Millisecond
		}
		if r.Batch <= 0 {
			r.Batch = 256
		}
		if r.t == nil {
			r.t = startTicker(ctx.ActorSystem().Root, ctx.Self(), r.Interval, func() any { return &ReaperTick{} })
		}
	case *Committed:
		if m.Restored != nil {
			r.idx.rebuild(m.Restored)
		}
		for i := range m.Updates {
			r.idx.track(&m.Updates[i])
		}
	case *ReaperTick:
		r.expire(ctx)
	case *expireDone:
		r.busy = false
		r.expire(ctx)
	case *actor.Stopping:
		r.t.Stop()
	}
}

func (r *Reaper) expire(ctx actor.Context) {
	if r.busy {
		return
	}
	due := r.idx.popDue(r.Now(), r.Batch)
	if len(due) == 0 {
		return
	}
	r.busy = true
	self, root := ctx.Self(), ctx.ActorSystem().Root
	ctx.Send(r.Proposer, &Expire{Items: due, Done: func() { root.Send(self, &expireDone{}) }})
}

// Len returns the number of keys with a pending expiry.
func (r *Reaper) Len() int { return r.idx.Len() }

// expiryItem is one key with a ttl.
type expiryItem struct {
	key   string
	seq   int64 // the update that set the ttl
	at    int64 // unix nanoseconds
	index int
}

// expiryIndex is a heap of expiryItems plus a map from key to item.
type expiryIndex struct {
	items []*expiryItem
	byKey map[string]*expiryItem
}

func (x *expiryIndex) Len() int           { return len(x.items) }
func (x *expiryIndex) Less(i, j int) bool { return x.items[i].at < x.items[j].at }
func (x *expiryIndex) Swap(i, j int) {
	x.items[i], x.items[j] = x.items[j], x.items[i]
	x.items[i].index, x.items[j].index = i, j
}
func (x *expiryIndex) Push(v any) {
	it := v.(*expiryItem)
	it.index = len(x.items)
	x.items = append(x.items, it)
}
func (x *expiryIndex) Pop() any {
	n := len(x.items) - 1
	it := x.items[n]
	x.items[n] = nil
	x.items = x.items[:n]
	return it
}

// track updates the index for one committed update: a new ttl adds or
// moves the key; anything else that touches a tracked key removes it.
func (x *expiryIndex) track(u *Update) {
	if x.byKey == nil {
		x.byKey = make(map[string]*expiryItem)
	}
	it := x.byKey[string(u.Msg.Key)]
	if u.ExpiresAt.IsZero() {
		if it != nil {
			heap.Remove(x, it.index)
			delete(x.byKey, it.key)
		}
		return
	}
	at := u.ExpiresAt.UnixNano()
	if it != nil {
		it.seq, it.at = u.Msg.Seq, at
		heap.Fix(x, it.index)
		return
	}
	it = &expiryItem{key: string(u.Msg.Key), seq: u.Msg.Seq, at: at}
	x.byKey[it.key] = it
	heap.Push(x, it)
}

// popDue removes and returns the keys whose expiry is at or before now,
// earliest first, at most max of them.
func (x *expiryIndex) popDue(now time.Time, max int) []ExpireItem {
	var due []ExpireItem
	t := now.UnixNano()
	for len(x.items) > 0 && x.items[0].at <= t && len(due) < max {
		it := heap.Pop(x).(*expiryItem)
		delete(x.byKey, it.key)
		due = append(due, ExpireItem{Key: []byte(it.key), Seq: it.seq})
	}
	return due
}

// rebuild replaces the index with the keys of v that have an expiry (after
// a snapshot restore), in O(n).
func (x *expiryIndex) rebuild(v *kvmap.View) {
	x.items, x.byKey = nil, make(map[string]*expiryItem)
	v.Ascend(nil, func(e kvmap.Entry) bool {
		if at := e.Expires(); at != 0 {
			it := &expiryItem{key: string(e.Key()), seq: e.Seq(), at: at, index: len(x.items)}
			x.items = append(x.items, it)
			x.byKey[it.key] = it
		}
		return true
	})
	heap.Init(x)
}
