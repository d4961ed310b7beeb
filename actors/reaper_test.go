package actors

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport/adapter"
)

func update(key string, seq int64, expires time.Time) *Update {
	return &Update{Msg: kvmsg.Msg{Key: []byte(key), Seq: seq, Body: []byte("v")}, ExpiresAt: expires}
}

// pop is popDue collected.
func pop(x *expiryIndex, now time.Time, n int) []pendingExpiry {
	var out []pendingExpiry
	x.popDue(now.UnixNano(), n, func(key string, seq, at int64) { out = append(out, pendingExpiry{key, seq, at}) })
	return out
}

func TestExpiryIndexTracksOnlyTTLKeys(t *testing.T) {
	var x expiryIndex
	now := time.Unix(1000, 0)
	x.track(update("a", 1, now.Add(time.Second)))
	x.track(update("b", 2, time.Time{})) // no ttl: never indexed
	x.track(update("c", 3, now.Add(3*time.Second)))
	x.track(update("a", 4, now.Add(5*time.Second))) // overwrite moves a
	x.track(update("c", 5, time.Time{}))            // overwrite without ttl removes c
	if x.Len() != 1 {
		t.Fatalf("index holds %d keys, want 1 (a)", x.Len())
	}
	if due := pop(&x, now.Add(4*time.Second), 1<<30); len(due) != 0 {
		t.Fatalf("due at +4s: %v (a was moved to +5s)", due)
	}
	if n := x.countDue(now.Add(5 * time.Second).UnixNano()); n != 1 {
		t.Fatalf("%d due at +5s, want 1", n)
	}
	due := pop(&x, now.Add(5*time.Second), 1<<30)
	if len(due) != 1 || due[0].key != "a" || due[0].seq != 4 {
		t.Fatalf("due at +5s: %+v, want a@4", due)
	}
	if x.Len() != 0 || x.has("a") {
		t.Fatalf("index not empty after pop: %d", x.Len())
	}
}

func TestExpiryIndexOrder(t *testing.T) {
	var x expiryIndex
	now := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		x.track(update(fmt.Sprint(i), int64(i+1), now.Add(time.Duration((i*37)%100)*time.Millisecond)))
	}
	if n := x.countDue(now.Add(49 * time.Millisecond).UnixNano()); n != 50 {
		t.Fatalf("countDue: %d, want 50", n)
	}
	due := pop(&x, now.Add(49*time.Millisecond), 1<<30)
	if len(due) != 50 {
		t.Fatalf("%d due, want 50", len(due))
	}
	for i := 1; i < len(due); i++ {
		if due[i].at < due[i-1].at {
			t.Fatalf("popped out of order: %v after %v", due[i].at, due[i-1].at)
		}
	}
	if rest := pop(&x, now.Add(time.Hour), 1<<30); len(rest) != 50 {
		t.Fatalf("%d left, want 50", len(rest))
	}
}

// TestReaperTickDoesNotGrowWithKeys: with a million keys indexed and none
// due, a tick is a look at the heap's top, not a scan.
func TestReaperTickDoesNotGrowWithKeys(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	var x expiryIndex
	now := time.Unix(1000, 0)
	for i := 0; i < n; i++ {
		x.track(update(fmt.Sprintf("/k/%07d", i), int64(i+1), now.Add(time.Hour+time.Duration(i))))
	}
	const ticks = 1000
	start := time.Now()
	for i := 0; i < ticks; i++ {
		if due := pop(&x, now.Add(time.Duration(i)*time.Millisecond), 1<<30); len(due) != 0 {
			t.Fatalf("tick %d expired %d keys", i, len(due))
		}
	}
	per := time.Since(start) / ticks
	t.Logf("tick with %d keys indexed, none due: %v", n, per)
	// A scan of n keys takes milliseconds; a heap peek takes nanoseconds.
	// 100µs leaves room for a loaded, race-instrumented machine.
	if per > 100*time.Microsecond {
		t.Errorf("tick took %v with %d keys indexed and none due", per, n)
	}
}

// fakeLog stands for proposer, log and store: it commits each Expire back
// to the reaper (a Committed with the expiry deletes) and then calls Done,
// or drops it (Done only) while dropping is set.
type fakeLog struct {
	reaper   atomic.Pointer[actor.PID]
	dropping atomic.Bool
	mu       sync.Mutex
	batches  [][]ExpireItem
	keys     int
}

func (f *fakeLog) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(*Expire)
	if !ok {
		return
	}
	f.mu.Lock()
	f.batches = append(f.batches, m.Items)
	f.mu.Unlock()
	if !f.dropping.Load() {
		c := &Committed{}
		for _, it := range m.Items {
			c.Updates = append(c.Updates, Update{Msg: kvmsg.Msg{Key: it.Key}, Expired: true})
		}
		f.mu.Lock()
		f.keys += len(m.Items)
		f.mu.Unlock()
		ctx.Send(f.reaper.Load(), c)
	}
	m.Done()
}

func (f *fakeLog) counts() (batches, keys int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.batches), f.keys
}

// reaperRig is a reaper spawned against a fakeLog.
type reaperRig struct {
	sys    *actor.ActorSystem
	log    *fakeLog
	reaper *Reaper
	pid    *actor.PID
	st     *stats.Server
}

func newReaperRig(t *testing.T, r *Reaper) *reaperRig {
	t.Helper()
	sys := quietSystem(t)
	t.Cleanup(sys.Shutdown)
	g := &reaperRig{sys: sys, log: &fakeLog{}, reaper: r, st: &stats.Server{}}
	r.Proposer = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return g.log }))
	r.Stats = g.st
	g.pid = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return r }))
	g.log.reaper.Store(g.pid)
	t.Cleanup(func() { sys.Root.StopFuture(g.pid).Wait() })
	return g
}

// due sends n keys whose ttl passed a second ago, as one committed batch.
func (g *reaperRig) due(prefix string, n int) {
	c := &Committed{}
	past := time.Now().Add(-time.Second)
	for i := range n {
		c.Updates = append(c.Updates, *update(fmt.Sprintf("%s%06d", prefix, i), int64(i+1), past))
	}
	g.sys.Root.Send(g.pid, c)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, 5*time.Millisecond, what, cond)
}

// TestReaperProposesOnlyWhileLeading (issue 13, TTL): a follower keeps its
// index from the committed batches but proposes nothing; once told it
// leads, it proposes what is due at once (not at its next tick), and when
// it stops leading it stops proposing.
func TestReaperProposesOnlyWhileLeading(t *testing.T) {
	g := newReaperRig(t, &Reaper{Interval: time.Hour, Batch: 100, Rate: -1})
	g.sys.Root.Send(g.pid, &Leadership{Self: false, Leader: "b", Term: 1})
	g.due("/f/", 250)
	g.sys.Root.Send(g.pid, &ReaperTick{})
	waitFor(t, 5*time.Second, "the follower indexed the keys", func() bool { return g.st.ExpiryIndexKeys.Load() == 250 })
	waitFor(t, 5*time.Second, "the follower's backlog counted", func() bool { return g.st.ExpiryBacklog.Load() == 250 })
	if b, _ := g.log.counts(); b != 0 {
		t.Fatalf("a follower proposed %d expiry batches", b)
	}

	g.sys.Root.Send(g.pid, &Leadership{Self: true, Leader: "a", Term: 2})
	waitFor(t, 5*time.Second, "the new leader expired every key", func() bool { _, k := g.log.counts(); return k == 250 })
	waitFor(t, 5*time.Second, "the index emptied", func() bool { return g.st.ExpiryIndexKeys.Load() == 0 })
	if b, _ := g.log.counts(); b != 3 {
		t.Errorf("%d batches for 250 keys at 100 a batch, want 3", b)
	}

	g.sys.Root.Send(g.pid, &Leadership{Self: false, Leader: "c", Term: 3})
	g.due("/g/", 10)
	g.sys.Root.Send(g.pid, &ReaperTick{})
	waitFor(t, 5*time.Second, "the follower indexed the keys", func() bool { return g.st.ExpiryIndexKeys.Load() == 10 })
	if b, _ := g.log.counts(); b != 3 {
		t.Fatalf("after losing the lead the reaper proposed %d more batches", b-3)
	}
}

// TestReaperProposesDroppedBatchesAgain: a batch the log drops (Done
// without a commit, as when leadership moves or the log fails) goes back
// into the index and is proposed again.
func TestReaperProposesDroppedBatchesAgain(t *testing.T) {
	g := newReaperRig(t, &Reaper{Interval: 20 * time.Millisecond, Batch: 10, Rate: -1})
	g.log.dropping.Store(true)
	g.sys.Root.Send(g.pid, &Leadership{Self: false, Term: 1})
	g.due("/d/", 30)
	g.sys.Root.Send(g.pid, &Leadership{Self: true, Term: 2})
	waitFor(t, 5*time.Second, "batches dropped", func() bool { b, _ := g.log.counts(); return b >= 5 })
	if n := g.st.ExpiryIndexKeys.Load(); n != 30 {
		t.Fatalf("after dropped batches the index holds %d keys, want 30", n)
	}
	// Retried at the ticks (50 a second), not in a loop.
	time.Sleep(200 * time.Millisecond) // a span to count retries in, not a wait for a condition
	if b, _ := g.log.counts(); b > 100 {
		t.Errorf("%d dropped batches retried within about 300ms: retried without waiting for a tick", b)
	}
	g.log.dropping.Store(false)
	waitFor(t, 5*time.Second, "every key expired", func() bool { _, k := g.log.counts(); return k == 30 })
	waitFor(t, 5*time.Second, "the index emptied", func() bool { return g.st.ExpiryIndexKeys.Load() == 0 })
}

// TestReaperSharesTheCollectorsCredits: each expiry batch holds one of the
// collector's credits while in flight; with none free the reaper waits;
// and a reader waiting for credits beside a mass expiry gets its turns.
func TestReaperSharesTheCollectorsCredits(t *testing.T) {
	credits := adapter.NewCredits(1)
	stop := make(chan struct{})
	defer close(stop)
	if !credits.Acquire(stop) {
		t.Fatal("no credit")
	}
	g := newReaperRig(t, &Reaper{Interval: 10 * time.Millisecond, Batch: 10, Rate: -1, Credits: credits})
	g.due("/c/", 5_000)
	g.sys.Root.Send(g.pid, &ReaperTick{})
	waitFor(t, 5*time.Second, "the backlog seen", func() bool { return g.st.ExpiryBacklog.Load() == 5_000 })
	if b, _ := g.log.counts(); b != 0 {
		t.Fatalf("the reaper proposed %d batches with no credit free", b)
	}
	credits.Release()
	waitFor(t, 5*time.Second, "expiries flowing", func() bool { b, _ := g.log.counts(); return b > 0 })

	// The collector's reader, in turn with the reaper: 100 batches of its
	// own while 500 expiry batches wait.
	reads := 0
	for ; reads < 100; reads++ {
		if !credits.Acquire(stop) {
			t.Fatal("no credit")
		}
		credits.Release()
	}
	if _, k := g.log.counts(); k == 5_000 {
		t.Errorf("the reader got its 100 credits only once the mass expiry was over")
	}
	waitFor(t, 30*time.Second, "every key expired", func() bool { _, k := g.log.counts(); return k == 5_000 })
	waitFor(t, 5*time.Second, "the credit back", func() bool { return credits.Available() == 1 })
}

// TestReaperRate: at Rate keys/s, 1,000 due keys in batches of 100 leave
// over about 0.9 s (the first batch at once), never faster.
func TestReaperRate(t *testing.T) {
	g := newReaperRig(t, &Reaper{Interval: 20 * time.Millisecond, Batch: 100, Rate: 1000})
	g.due("/r/", 1000)
	start := time.Now()
	waitFor(t, 5*time.Second, "the first batch", func() bool { b, _ := g.log.counts(); return b > 0 })
	waitFor(t, 30*time.Second, "every key expired", func() bool { _, k := g.log.counts(); return k == 1000 })
	took := time.Since(start)
	t.Logf("1,000 keys at 1,000/s in batches of 100: %v", took)
	if took < 850*time.Millisecond {
		t.Errorf("1,000 keys expired in %v at a rate of 1,000/s", took)
	}
	if b, _ := g.log.counts(); b != 10 {
		t.Errorf("%d batches, want 10", b)
	}
	if r := g.st.ExpiryRate.Load(); r != 1000 {
		t.Errorf("rate gauge %d, want 1000", r)
	}
}

// TestExpiryIndexAgainstAMap: random sets, overwrites, deletes and pops
// (enough to grow the table and compact the key arena) agree with a plain
// map's answers.
func TestExpiryIndexAgainstAMap(t *testing.T) {
	var x expiryIndex
	type want struct{ seq, at int64 }
	model := map[string]want{}
	rng := uint64(42)
	next := func(n int) int { rng = rng*6364136223846793005 + 1442695040888963407; return int(rng>>33) % n }
	now := int64(0)
	for step := range 200_000 {
		key := fmt.Sprintf("/k/%d/%s", next(5000), string(make([]byte, next(40))))
		switch op := next(10); {
		case op < 6:
			at := now + int64(next(1000))
			x.push(key, int64(step), at)
			model[key] = want{int64(step), at}
		case op < 8:
			x.removeKey([]byte(key))
			delete(model, key)
		default:
			now += int64(next(50))
			var last int64 = -1 << 62
			x.popDue(now, next(20), func(k string, seq, at int64) {
				w, ok := model[k]
				if !ok || w.seq != seq || w.at != at || at > now || at < last {
					t.Fatalf("step %d: popped %q seq %d at %d (now %d, previous %d), model has %+v %v", step, k, seq, at, now, last, w, ok)
				}
				last = at
				delete(model, k)
			})
		}
		if x.Len() != len(model) {
			t.Fatalf("step %d: index holds %d keys, model %d", step, x.Len(), len(model))
		}
		if step%1000 == 0 {
			due := 0
			for k, w := range model {
				if !x.has(k) {
					t.Fatalf("step %d: %q missing", step, k)
				}
				if w.at <= now {
					due++
				}
			}
			if got := x.countDue(now); got != due {
				t.Fatalf("step %d: countDue %d, want %d", step, got, due)
			}
		}
	}
	rest := pop(&x, time.Unix(0, 1<<62), 1<<30)
	if len(rest) != len(model) || x.Len() != 0 {
		t.Fatalf("%d popped at the end, model %d, index left %d", len(rest), len(model), x.Len())
	}
}
