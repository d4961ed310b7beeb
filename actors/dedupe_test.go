package actors_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/raft"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
)

// scriptLog is a raft node whose Apply results the test scripts: each
// call takes the next error of errs (none left: success). A successful
// entry is "applied" at once: its credit is taken from the Proposals
// table and returned, and commit (when set) hears of it, as the store's
// Committed feed would tell the proposer.
type scriptLog struct {
	mu      sync.Mutex
	errs    []error
	props   *actors.Proposals
	commit  func(ops []raftlog.Op)
	applied [][]raftlog.Op // successful entries
	tries   int
}

func (l *scriptLog) Apply(data []byte) raft.ApplyFuture {
	e, err := raftlog.Decode(data)
	if err != nil {
		return failed{err}
	}
	l.mu.Lock()
	l.tries++
	var ferr error
	if len(l.errs) > 0 {
		ferr, l.errs = l.errs[0], l.errs[1:]
	}
	if ferr == nil {
		l.applied = append(l.applied, e.Ops)
	}
	commit := l.commit
	l.mu.Unlock()
	if ferr == nil {
		if commit != nil {
			commit(e.Ops)
		}
		if d := l.props.Take(e.Proposal); d != nil {
			d()
		}
	}
	return failed{ferr}
}

func (l *scriptLog) Barrier() error { return nil }

// keys returns the keys of every update applied, in order.
func (l *scriptLog) keys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ops := range l.applied {
		for _, op := range ops {
			out = append(out, string(op.Msg.Key))
		}
	}
	return out
}

type propRig struct {
	t       *testing.T
	sys     *actor.ActorSystem
	st      *stats.Server
	log     *scriptLog
	pid     *actor.PID
	credits atomic.Int64
	now     atomic.Int64
}

func newPropRig(t *testing.T, cfg actors.ProposerConfig, errs ...error) *propRig {
	return newPropRigStore(t, cfg, nil, errs...)
}

// newPropRigStore is newPropRig with a store actor made by store in the
// rig's actor system (ProposerConfig.Store).
func newPropRigStore(t *testing.T, cfg actors.ProposerConfig, store func(*actor.ActorSystem) *actor.PID, errs ...error) *propRig {
	t.Helper()
	r := &propRig{t: t, st: &stats.Server{}}
	r.now.Store(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC).UnixNano())
	r.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	props := &actors.Proposals{}
	r.log = &scriptLog{errs: errs, props: props}
	cfg.Raft, cfg.Proposals, cfg.Stats = r.log, props, r.st
	cfg.Now = func() time.Time { return time.Unix(0, r.now.Load()) }
	if store != nil {
		cfg.Store = store(r.sys)
	}
	r.pid = r.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return actors.NewProposer(cfg) }))
	t.Cleanup(func() {
		_ = r.sys.Root.StopFuture(r.pid).Wait()
		r.sys.Shutdown()
	})
	return r
}

// upd is an update of key with UUID id (0: none), as the collector hands
// it on; seq is the client's sequence frame (a hop count when forwarded).
func upd(key string, id byte, seq int64) actors.Pending {
	m := kvmsg.Msg{Key: []byte(key), Seq: seq, Body: []byte("v-" + key), Props: []byte("ttl=60\n")}
	if id != 0 {
		m.UUID = bytes.Repeat([]byte{id}, kvmsg.UUIDLen)
	}
	return actors.Pending{Msg: m, TTL: time.Minute}
}

func (r *propRig) send(items ...actors.Pending) {
	r.st.StoreBacklog.Add(1)
	r.credits.Add(1)
	var once atomic.Bool
	r.sys.Root.Send(r.pid, &actors.Updates{Items: items, Done: func() {
		if !once.CompareAndSwap(false, true) {
			r.t.Error("credit returned twice")
		}
		r.credits.Add(-1)
	}})
}

// committed tells the proposer the store applied these updates.
func (r *propRig) committed(items ...actors.Pending) {
	c := &actors.Committed{}
	for _, it := range items {
		c.Updates = append(c.Updates, actors.Update{Msg: it.Msg})
	}
	r.sys.Root.Send(r.pid, c)
}

// settle waits until every credit is back and the proposer has dealt with
// everything sent before (a Drain answers after them).
func (r *propRig) settle() {
	r.t.Helper()
	testkit.WaitFor(r.t, 20*time.Second, time.Millisecond, "every credit back", func() bool { return r.credits.Load() == 0 })
	done := make(chan struct{})
	r.sys.Root.Send(r.pid, &actors.Drain{Reply: done})
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		r.t.Fatal("the proposer did not drain")
	}
}

func (r *propRig) wantKeys(want ...string) {
	r.t.Helper()
	if got := r.log.keys(); fmt.Sprint(got) != fmt.Sprint(want) {
		r.t.Fatalf("proposed %v, want %v", got, want)
	}
}

// TestProposerDedupe: an update whose UUID was proposed (or applied)
// already is dropped and counted, its credit returned; updates without a
// UUID are never deduplicated.
func TestProposerDedupe(t *testing.T) {
	r := newPropRig(t, actors.ProposerConfig{})
	r.send(upd("/a", 1, 0), upd("/b", 2, 0), upd("/e1", 0, 0))
	r.settle()
	r.send(upd("/a", 1, 0), upd("/e1", 0, 0), upd("/c", 3, 0)) // /a again: a Model Six client's second copy
	r.send(upd("/a", 1, 0), upd("/b", 2, 0))                   // every update a duplicate
	r.settle()
	r.committed(upd("/d", 4, 0)) // applied here after another node proposed it
	r.send(upd("/d", 4, 0), upd("/e2", 0, 0), upd("/e2", 0, 0))
	r.settle()
	r.wantKeys("/a", "/b", "/e1", "/e1", "/c", "/e2", "/e2")
	if n := r.st.UpdatesDeduplicated.Load(); n != 4 {
		t.Errorf("deduplicated %d, want 4", n)
	}
}

// TestProposerDedupeWindowBound: the window holds at most DedupeWindow
// UUIDs and none older than DedupeAge; past either a UUID is new again.
func TestProposerDedupeWindowBound(t *testing.T) {
	r := newPropRig(t, actors.ProposerConfig{DedupeWindow: 3, DedupeAge: time.Minute})
	for i := byte(1); i <= 4; i++ {
		r.send(upd(fmt.Sprintf("/k%d", i), i, 0))
		r.settle()
	}
	r.send(upd("/k1", 1, 0)) // evicted by /k4: proposed again
	r.settle()
	r.send(upd("/k4", 4, 0)) // still in the window
	r.settle()
	r.now.Add(int64(2 * time.Minute))
	r.send(upd("/k4", 4, 0)) // older than DedupeAge now
	r.settle()
	r.wantKeys("/k1", "/k2", "/k3", "/k4", "/k1", "/k4")
	if n := r.st.UpdatesDeduplicated.Load(); n != 1 {
		t.Errorf("deduplicated %d, want 1", n)
	}
	if n := r.st.DedupeWindow.Load(); n > 3 {
		t.Errorf("window holds %d UUIDs, bound 3", n)
	}

	off := newPropRig(t, actors.ProposerConfig{DedupeWindow: -1})
	off.send(upd("/x", 9, 0), upd("/x", 9, 0))
	off.settle()
	off.wantKeys("/x", "/x")
}

// TestProposerLeadershipLost: a batch raft refused because the leadership
// moved is forwarded to the new leader, every frame as the client sent it
// (its credit back once forwarded); when this node leads again it first
// waits for its store, so that a retry of an update that did commit is
// recognised as a duplicate, while one that did not is proposed.
func TestProposerLeadershipLost(t *testing.T) {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	leader, err := transport.Bind(zctx, zmq.PULL, "tcp://127.0.0.1:*", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	ep, _ := leader.GetLastEndpoint()

	// The store: asked for a view (a new leader's wait), it first reports
	// what it applied from the log meanwhile (/a's entry did commit, /b's
	// did not), then answers.
	var rig *propRig
	var views atomic.Int64
	var appliedMeanwhile []actors.Pending
	store := func(sys *actor.ActorSystem) *actor.PID {
		return sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			if m, ok := c.Message().(*actors.ViewRequest); ok {
				views.Add(1)
				rig.committed(appliedMeanwhile...)
				c.Send(m.ReplyTo, &actors.View{Tag: m.Tag})
			}
		}))
	}
	rig = newPropRigStore(t, actors.ProposerConfig{
		HeldRetry: time.Hour,
		Forwarder: actors.NewForwarder(actors.ForwarderConfig{Context: zctx}),
	}, store, raft.ErrLeadershipLost)
	r := rig
	r.sys.Root.Send(r.pid, &actors.Leadership{Self: true, Leader: "me", Term: 1})
	r.send(upd("/a", 1, 0), upd("/b", 2, 0))
	testkit.WaitFor(t, 20*time.Second, time.Millisecond, "the refused entry", func() bool {
		r.log.mu.Lock()
		defer r.log.mu.Unlock()
		return r.log.tries == 1
	})
	// Still believing it leads, the node holds the batch until it hears
	// of the new leader (HeldRetry is long here), then forwards it.
	r.sys.Root.Send(r.pid, &actors.Leadership{Leader: "other", Collector: ep, Term: 2})
	got := map[string]kvmsg.Msg{}
	for len(got) < 2 {
		frames, err := testkit.RecvWithin(leader, 20*time.Second)
		if err != nil {
			t.Fatalf("forwarded %d of 2: %v", len(got), err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		got[string(m.Key)] = m
	}
	for key, id := range map[string]byte{"/a": 1, "/b": 2} {
		m := got[key]
		if !bytes.Equal(m.UUID, bytes.Repeat([]byte{id}, kvmsg.UUIDLen)) || string(m.Props) != "ttl=60\n" || string(m.Body) != "v-"+key ||
			actors.ForwardHops(m.Seq) != 1 {
			t.Errorf("%s forwarded as uuid %x props %q body %q hops %d", key, m.UUID, m.Props, m.Body, actors.ForwardHops(m.Seq))
		}
	}
	testkit.WaitFor(t, 20*time.Second, time.Millisecond, "credit back once forwarded", func() bool { return r.credits.Load() == 0 })

	// The entry did commit after all (ErrLeadershipLost: it may): the new
	// leader's log holds /a. Leadership comes back here; the forwarded
	// copies come back too (another node forwarding them, or a Model Six
	// client's second copy), queued before the store has caught up.
	appliedMeanwhile = []actors.Pending{upd("/a", 1, 0)}
	r.sys.Root.Send(r.pid, &actors.Leadership{Self: true, Leader: "me", Term: 3})
	r.send(upd("/a", 1, actors.ForwardSeq(2)), upd("/b", 2, actors.ForwardSeq(2)), upd("/c", 3, 0))
	r.settle()
	r.wantKeys("/b", "/c")
	if n := r.st.UpdatesDeduplicated.Load(); n != 1 {
		t.Errorf("deduplicated %d, want 1 (/a)", n)
	}
	if views.Load() != 2 {
		t.Errorf("the store was asked %d times, want twice (each time the node became leader)", views.Load())
	}
	if r.st.LogFailed.Load() || r.st.NotStored.Load() != 0 {
		t.Error("a lost leadership counted as a failed log")
	}
}

// TestProposerHopBound: a forwarded update reaching a node that no
// longer leads is forwarded again with one more hop; one forwarded
// MaxForwardHops times already is dropped and counted (leadership flapping
// cannot bounce it for ever).
func TestProposerHopBound(t *testing.T) {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zctx.Term() })
	leader, err := transport.Bind(zctx, zmq.PULL, "tcp://127.0.0.1:*", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leader.Close() })
	ep, _ := leader.GetLastEndpoint()
	r := newPropRig(t, actors.ProposerConfig{Forwarder: actors.NewForwarder(actors.ForwarderConfig{Context: zctx})})
	r.sys.Root.Send(r.pid, &actors.Leadership{Leader: "other", Collector: ep, Term: 9})
	r.send(upd("/h", 5, actors.ForwardSeq(actors.MaxForwardHops)), upd("/g", 6, actors.ForwardSeq(1)))
	frames, err := testkit.RecvWithin(leader, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m, err := kvmsg.Decode(frames, kvmsg.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Key) != "/g" || actors.ForwardHops(m.Seq) != 2 {
		t.Errorf("forwarded %s with %d hops, want /g with 2", m.Key, actors.ForwardHops(m.Seq))
	}
	r.settle()
	if n := r.st.ForwardDropped.Get(actors.DropHops); n != 1 {
		t.Errorf("dropped for hops %d, want 1", n)
	}
	if _, err := testkit.RecvWithin(leader, 100*time.Millisecond); err == nil {
		t.Error("the update past the hop bound was forwarded")
	}
	r.wantKeys()
}

// gateLog is a raft node whose entries commit only when the test opens
// the gate: the proposer's queue fills meanwhile.
type gateLog struct {
	gate  chan struct{}
	props *actors.Proposals
}

type gated struct {
	l  *gateLog
	id uint64
}

func (g gated) Error() error {
	<-g.l.gate
	if d := g.l.props.Take(g.id); d != nil {
		d()
	}
	return nil
}
func (g gated) Index() uint64         { return 0 }
func (g gated) Response() interface{} { return nil }

func (l *gateLog) Apply(data []byte) raft.ApplyFuture {
	e, _ := raftlog.Decode(data)
	return gated{l, e.Proposal}
}

// TestProposerQueueBound: past MaxQueueBytes queued, client batches are
// rejected (reason overloaded) and their credits returned at once; what
// was queued is proposed once the log moves again.
func TestProposerQueueBound(t *testing.T) {
	st := &stats.Server{}
	props := &actors.Proposals{}
	log := &gateLog{gate: make(chan struct{}), props: props}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer sys.Shutdown()
	item := upd("/q", 0, 0)
	item.Msg.Body = make([]byte, 10<<10)
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return actors.NewProposer(actors.ProposerConfig{Raft: log, Proposals: props, Stats: st, Window: 1, MaxQueueBytes: 25 << 10})
	}))
	var credits atomic.Int64
	send := func() {
		credits.Add(1)
		st.StoreBacklog.Add(1)
		sys.Root.Send(pid, &actors.Updates{Items: []actors.Pending{item}, Done: func() { credits.Add(-1) }})
	}
	send()
	done := make(chan struct{})
	sys.Root.Send(pid, &actors.Drain{Reply: done}) // answers only once the log moves: the entry is in flight
	testkit.WaitFor(t, 20*time.Second, time.Millisecond, "the first entry in flight", func() bool {
		return st.StoreBacklog.Load() == 0 && st.ProposerQueued.Load() == 0
	})
	for i := 0; i < 4; i++ {
		send()
	}
	// One entry in flight, two batches of 10 KiB queued (25 KiB bound),
	// two rejected.
	testkit.WaitFor(t, 20*time.Second, time.Millisecond, "two batches rejected", func() bool {
		return st.RejectedTotal(stats.SourceCollector) == 2 && credits.Load() == 3
	})
	if q := st.ProposerQueued.Load(); q != 2 {
		t.Errorf("proposer queue gauge %d updates, want 2", q)
	}
	close(log.gate)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the proposer did not drain")
	}
	testkit.WaitFor(t, 20*time.Second, time.Millisecond, "every credit back", func() bool { return credits.Load() == 0 })
	testkit.WaitFor(t, 20*time.Second, time.Millisecond, "queue empty", func() bool {
		return st.ProposerQueued.Load() == 0 && st.ProposerQueuedBytes.Load() == 0
	})
	_ = sys.Root.StopFuture(pid).Wait()
}
