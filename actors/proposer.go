package actors

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/raft"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
)

// ReasonNotStored is the reject reason for updates dropped because the log
// could not store them (disk full, I/O error): the server stops accepting
// updates rather than publish what it has not stored.
const ReasonNotStored = "not_stored"

// Applier is the raft node as the proposer sees it.
type Applier interface {
	Apply(data []byte) raft.ApplyFuture
}

// ProposerConfig configures the proposer.
type ProposerConfig struct {
	Raft      Applier
	Proposals *Proposals
	Stats     *stats.Server
	Logger    *slog.Logger
	// Now is the leader's clock that turns a ttl into a deadline; default
	// time.Now.
	Now func() time.Time
	// Window is how many entries may wait for raft at once (default 16);
	// MaxEntryBytes bounds one entry (default 1 MiB; a single larger batch
	// still goes alone).
	Window        int
	MaxEntryBytes int
	// MaxQueueBytes bounds the bytes of updates queued for the log
	// (default DefaultProposerQueueBytes); see Proposer on how the queue is
	// bounded.
	MaxQueueBytes int64

	// Forwarder, when set, is spawned as the proposer's child: while
	// another node leads, validated updates go to it (and on to the
	// leader's collector) instead of the log.
	Forwarder *Forwarder
	// Store is the store actor. When this node becomes the leader the
	// proposer waits, before it proposes, until the store has applied every
	// committed entry (a raft barrier, then a ViewRequest answered behind
	// the store's Committed batches), so the dedupe window is warm. Nil:
	// no wait.
	Store *actor.PID
	// DedupeWindow is how many UUIDs the dedupe window holds (default
	// DefaultDedupeWindow; negative: no deduplication) and DedupeAge how
	// long at most (default DefaultDedupeAge).
	DedupeWindow int
	DedupeAge    time.Duration
	// HeldRetry is how long a batch that the log refused because this node
	// lost the leadership waits for news of the new leader before it is
	// tried again (default 1s).
	HeldRetry time.Duration
}

// DefaultProposerQueueBytes bounds the updates waiting for the log
// (ProposerConfig.MaxQueueBytes).
const DefaultProposerQueueBytes = 256 << 20

// ReasonOverloaded is the reject reason for updates the proposer shed
// because its queue held MaxQueueBytes already.
const ReasonOverloaded = "overloaded"

// Proposer turns validated client updates (*Updates from the collector) and
// expiries (*Expire from the reaper) into raft log entries, on the leader.
// It batches only what is already queued: a batch arriving while fewer than
// Window entries are in flight is proposed as soon as the proposer's
// mailbox holds nothing older, never after a timer (a Go timer costs a
// millisecond here). One fsync then covers every update of an entry.
//
// Credits: each batch's Done travels with its entry through the Proposals
// table; the store hands it to the publisher with the committed batch, as
// before the log, so the collector's credits still bound everything in
// flight from the socket to the PUB writer.
//
// The queue's bound: every batch in it holds one of the collector reader's
// credits (the reaper's one batch its own), so it never holds more than
// Credits batches of at most BatchMax updates; once they are all here (or
// further down the pipeline) the reader stops reading, the collector
// socket's receive queue fills and ZeroMQ pushes back on the clients' PUSH
// sockets. Credits count batches, not bytes: 64 credits of 64 updates of
// 200 KB are 800 MB (a CPU-starved run once held 767 MiB here), so the
// server's reader also ends a batch at MaxQueueBytes/(2·Credits) bytes
// (server.batchBytes), and the credits then push back before the queue
// holds MaxQueueBytes. Past it, as a backstop, the proposer sheds new
// client batches (counted as rejected, reason overloaded, their credits
// returned at once) rather than let the heap grow.
//
// Cluster (README "Running a cluster"): the proposer follows *Leadership.
// While this node leads (or was never told: a single node), it proposes;
// while another node leads, client batches go to the forwarder, which sends
// them to the leader's collector unchanged. A batch raft refused because
// the leadership moved (raft.ErrNotLeader, ErrLeadershipLost,
// ErrEnqueueTimeout) is not dropped: it is forwarded too (ErrLeadershipLost
// means it may still commit; the leader's dedupe window makes the retry
// safe).
//
// Dedupe: the proposer applies each non-empty UUID at most once within a
// bounded window (by count and age). It decides before proposing, so the
// log holds each update once and every node applies the same log: nothing
// about dedupe has to be part of the replicated state or of the FSM
// snapshot. The window holds what this node proposed and still waits for,
// and what its store applied (the store's *Committed feed reaches the
// proposer on every node, followers included, and on a restart the
// replayed log warms it). A new leader proposes nothing until its store has
// applied every committed entry (see Store), so an update that its
// predecessor got into the log just before losing the leadership is in the
// window before the predecessor's retry of it can be proposed again. What
// the window cannot see: a duplicate whose first copy was applied longer
// ago than the window reaches, or before a restart from an FSM snapshot
// that was taken after it (the log replayed after the snapshot does not
// show it).
type Proposer struct {
	cfg      ProposerConfig
	queue    []proposal
	qBytes   int64
	qUpdates int64
	inflight int
	flying   map[uint64][]raftlog.Op
	flushing bool
	nextID   uint64
	failed   error
	drains   []chan<- struct{}

	lead     *Leadership // nil: never told (a single node leads)
	warm     bool        // the store has applied what was committed when this node began to lead
	warmGen  uint64
	fwd      *actor.PID
	window   *dedupe
	held     []proposal // refused for a lost leadership while this node still believes it leads
	retrying bool
}

// proposal is one incoming batch, encoded as ops.
type proposal struct {
	ops  []raftlog.Op
	size int
	done func()
}

// flush asks the proposer to propose what is queued (sent to itself, so it
// arrives after every batch already in the mailbox).
type flush struct{}

// LogReady hands the proposer the raft node once it leads and its store
// is caught up; until then batches wait in the queue.
type LogReady struct {
	Raft Applier
}

// Drain asks the proposer to answer on Reply once nothing is queued or in
// flight (shutdown, after its inputs have stopped).
type Drain struct {
	Reply chan<- struct{}
}

// applied reports one entry's raft result.
type applied struct {
	id  uint64
	err error
	n   int
}

// barrierer is a raft node that can wait until its FSM has applied every
// entry before the call (raftlog.Node).
type barrierer interface {
	Barrier() error
}

// warmed reports the barrier a new leader waits for; warmTag tags the
// store's View that follows it; retryHeld wakes the held batches.
type (
	warmed struct {
		gen uint64
		err error
	}
	warmTag   struct{ gen uint64 }
	rewarm    struct{ gen uint64 }
	retryHeld struct{}
)

// NewProposer returns the proposer actor.
func NewProposer(cfg ProposerConfig) *Proposer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Window <= 0 {
		cfg.Window = 16
	}
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = 1 << 20
	}
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = DefaultProposerQueueBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Proposals == nil {
		cfg.Proposals = &Proposals{}
	}
	if cfg.DedupeWindow == 0 {
		cfg.DedupeWindow = DefaultDedupeWindow
	}
	if cfg.DedupeAge <= 0 {
		cfg.DedupeAge = DefaultDedupeAge
	}
	if cfg.HeldRetry <= 0 {
		cfg.HeldRetry = time.Second
	}
	// Ids only need to differ from those of entries still in flight;
	// starting from the clock keeps them apart from a previous run's.
	return &Proposer{cfg: cfg, nextID: uint64(time.Now().UnixNano()), warm: true,
		flying: make(map[uint64][]raftlog.Op), window: newDedupe(cfg.DedupeWindow, cfg.DedupeAge)}
}

// Receive handles *Updates, *Expire, *Leadership, *Committed and the
// proposer's own messages.
func (p *Proposer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if p.cfg.Forwarder != nil && p.fwd == nil {
			pid, err := ctx.SpawnNamed(p.cfg.Forwarder.ChildProps(), "forwarder")
			if err != nil {
				p.cfg.Logger.Error("spawn the forwarder", "err", err)
			} else {
				p.fwd = pid
			}
		}
	case *Updates:
		p.cfg.Stats.StoreBacklog.Add(-1)
		if p.following() {
			p.forward(ctx, m.Items, m.Done)
			return
		}
		now := p.cfg.Now().UnixNano()
		pr := proposal{ops: make([]raftlog.Op, len(m.Items)), done: m.Done}
		for i, it := range m.Items {
			op := raftlog.Op{Kind: raftlog.OpSet, Msg: it.Msg, TTLNanos: int64(it.TTL)}
			if it.TTL > 0 && !it.Msg.IsDelete() {
				op.Expires = now + int64(it.TTL)
			}
			pr.ops[i] = op
			pr.size += op.Size()
		}
		if p.qBytes+int64(pr.size) > p.cfg.MaxQueueBytes && p.qBytes > 0 {
			p.shed(pr)
			return
		}
		p.enqueue(ctx, pr)
	case *Expire:
		pr := proposal{ops: make([]raftlog.Op, len(m.Items)), done: m.Done}
		if p.following() {
			// Only the leader expires keys; the new one's reaper will.
			if pr.done != nil {
				pr.done()
			}
			return
		}
		for i, it := range m.Items {
			op := raftlog.Op{Kind: raftlog.OpExpire, Msg: kvmsgKey(it.Key), Seq: it.Seq}
			pr.ops[i] = op
			pr.size += op.Size()
		}
		p.enqueue(ctx, pr)
	case *Leadership:
		p.leadership(ctx, m)
	case *Committed:
		p.learn(m)
	case *LogReady:
		p.cfg.Raft = m.Raft
		if p.leading() && !p.warm {
			p.startWarm(ctx)
		}
		p.propose(ctx)
	case *warmed:
		p.warmedUp(ctx, m)
	case *rewarm:
		if m.gen == p.warmGen && p.leading() && !p.warm {
			p.startWarm(ctx)
		}
	case *View:
		if t, ok := m.Tag.(warmTag); ok && t.gen == p.warmGen && p.leading() {
			p.warm = true
			p.propose(ctx)
			p.checkDrained()
		}
	case *retryHeld:
		p.retrying = false
		p.releaseHeld(ctx)
		p.checkDrained()
	case *Drain:
		p.drains = append(p.drains, m.Reply)
		p.checkDrained()
	case *flush:
		p.flushing = false
		p.propose(ctx)
	case *applied:
		p.inflight--
		ops := p.flying[m.id]
		delete(p.flying, m.id)
		if m.err != nil {
			if leadershipLost(m.err) {
				p.lost(ctx, m, ops)
			} else {
				p.fail(m)
			}
		}
		p.propose(ctx)
		p.checkDrained()
	}
}

// leadershipLost reports whether raft refused an entry because this node
// does not (or no longer) lead: the entry is retried at the leader.
func leadershipLost(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

func (p *Proposer) leading() bool   { return p.lead == nil || p.lead.Self }
func (p *Proposer) following() bool { return !p.leading() }

// leadership follows a change of leader: the forwarder hears of it first
// (in order with the batches sent to it); losing the leadership hands the
// queue to the forwarder, gaining it waits for the store (startWarm).
func (p *Proposer) leadership(ctx actor.Context, m *Leadership) {
	wasSelf := p.lead != nil && p.lead.Self
	l := *m
	p.lead = &l
	if p.fwd != nil {
		fl := l
		ctx.Send(p.fwd, &fl)
	}
	if l.Self {
		if !wasSelf {
			p.startWarm(ctx)
		}
		p.releaseHeld(ctx)
		p.propose(ctx)
	} else {
		p.warm = false
		p.warmGen++
		q := p.queue
		p.queue = nil
		p.qBytes, p.qUpdates = 0, 0
		p.gauge()
		for _, pr := range q {
			p.reroute(ctx, pr)
		}
		p.releaseHeld(ctx)
	}
	p.checkDrained()
}

// startWarm makes a new leader wait until its store has applied every
// committed entry: a raft barrier, then a ViewRequest (the store answers
// it after the Committed batches it sent us for those entries).
func (p *Proposer) startWarm(ctx actor.Context) {
	p.warmGen++
	b, ok := p.cfg.Raft.(barrierer)
	if p.cfg.Store == nil || (p.cfg.Raft != nil && !ok) {
		p.warm = true
		return
	}
	p.warm = false
	if p.cfg.Raft == nil {
		return // LogReady starts it
	}
	gen, self, root := p.warmGen, ctx.Self(), ctx.ActorSystem().Root
	go func() { root.Send(self, &warmed{gen: gen, err: b.Barrier()}) }()
}

func (p *Proposer) warmedUp(ctx actor.Context, m *warmed) {
	if m.gen != p.warmGen || !p.leading() {
		return
	}
	if m.err != nil {
		// Raft refused (leadership lost again, shutting down): news of
		// the leader follows; try again meanwhile.
		p.cfg.Logger.Debug("barrier before proposing failed; retrying", "err", m.err)
		if errors.Is(m.err, raft.ErrRaftShutdown) {
			p.warm = true // nothing more will commit: let the drain finish
			p.checkDrained()
			return
		}
		gen, self, root := m.gen, ctx.Self(), ctx.ActorSystem().Root
		time.AfterFunc(100*time.Millisecond, func() { root.Send(self, &rewarm{gen: gen}) })
		return
	}
	ctx.Send(p.cfg.Store, &ViewRequest{ReplyTo: ctx.Self(), Tag: warmTag{gen: m.gen}})
}

// learn adds the UUIDs the store applied to the dedupe window.
func (p *Proposer) learn(m *Committed) {
	if p.window == nil {
		return
	}
	now := p.cfg.Now().UnixNano()
	for i := range m.Updates {
		if u := &m.Updates[i]; !u.Expired {
			p.window.add(u.Msg.UUID, now, true)
		}
	}
	p.cfg.Stats.DedupeWindow.Store(int64(p.window.len()))
}

// forward sends client updates to the leader through the forwarder. An
// update the store applied already is dropped (counted as deduplicated),
// one forwarded MaxForwardHops times already is dropped (counted), the
// others carry their hop count in the sequence frame.
func (p *Proposer) forward(ctx actor.Context, items []Pending, done func()) {
	now := p.cfg.Now().UnixNano()
	out := make([]Pending, 0, len(items))
	for _, it := range items {
		if p.window.seen(it.Msg.UUID, now, true) {
			p.cfg.Stats.UpdatesDeduplicated.Add(1)
			continue
		}
		hops := ForwardHops(it.Msg.Seq)
		if hops >= MaxForwardHops {
			p.cfg.Stats.ForwardDropped.Add(DropHops, 1)
			continue
		}
		it.Msg.Seq = ForwardSeq(hops + 1)
		out = append(out, it)
	}
	if len(out) > 0 && p.fwd == nil {
		p.cfg.Stats.ForwardDropped.Add(DropStopped, int64(len(out)))
		out = nil
	}
	if len(out) == 0 {
		if done != nil {
			done()
		}
		return
	}
	ctx.Send(p.fwd, &Forward{Items: out, Done: done})
}

// reroute forwards a proposal's client updates (its expiries are left to
// the leader's reaper) with the proposal's credit.
func (p *Proposer) reroute(ctx actor.Context, pr proposal) {
	items := make([]Pending, 0, len(pr.ops))
	for _, op := range pr.ops {
		if op.Kind == raftlog.OpSet {
			items = append(items, Pending{Msg: op.Msg, TTL: time.Duration(op.TTLNanos)})
		}
	}
	p.forward(ctx, items, pr.done)
}

// lost handles an entry raft refused because the leadership moved: unless
// the store applied it after all, its updates leave the dedupe window
// (they were only proposed) and are retried at the leader.
func (p *Proposer) lost(ctx actor.Context, m *applied, ops []raftlog.Op) {
	done := p.cfg.Proposals.Take(m.id)
	if done == nil {
		return // the store got it after all
	}
	for i := range ops {
		if ops[i].Kind == raftlog.OpSet {
			p.window.forget(ops[i].Msg.UUID)
		}
	}
	pr := proposal{ops: ops, done: done}
	if p.following() {
		p.reroute(ctx, pr)
		return
	}
	// This node still believes it leads: news of the new leader is on its
	// way; until then (at most HeldRetry) the batch waits.
	p.held = append(p.held, pr)
	if !p.retrying {
		p.retrying = true
		self, root := ctx.Self(), ctx.ActorSystem().Root
		time.AfterFunc(p.cfg.HeldRetry, func() { root.Send(self, &retryHeld{}) })
	}
}

// releaseHeld moves the held batches on: to the queue while this node
// leads, to the forwarder while another does.
func (p *Proposer) releaseHeld(ctx actor.Context) {
	held := p.held
	p.held = nil
	for _, pr := range held {
		if p.following() {
			p.reroute(ctx, pr)
			continue
		}
		pr.size = 0
		for i := range pr.ops {
			pr.size += pr.ops[i].Size()
		}
		p.enqueue(ctx, pr)
	}
}

func (p *Proposer) checkDrained() {
	pending := len(p.queue) > 0 || len(p.held) > 0
	if len(p.drains) == 0 || p.inflight > 0 || (pending && p.cfg.Raft != nil && p.leading()) {
		return
	}
	for _, d := range p.drains {
		close(d)
	}
	p.drains = nil
}

func (p *Proposer) enqueue(ctx actor.Context, pr proposal) {
	if p.failed != nil || p.cfg.Stats.LogFailed.Load() {
		p.drop(pr.done, len(pr.ops))
		return
	}
	p.queue = append(p.queue, pr)
	p.qBytes += int64(pr.size)
	p.qUpdates += int64(len(pr.ops))
	p.gauge()
	if !p.flushing {
		p.flushing = true
		ctx.Send(ctx.Self(), &flush{})
	}
}

// shed drops a client batch the queue has no room for (MaxQueueBytes).
func (p *Proposer) shed(pr proposal) {
	for range pr.ops {
		p.cfg.Stats.Rejected(stats.SourceCollector, ReasonOverloaded)
	}
	if pr.done != nil {
		pr.done()
	}
}

func (p *Proposer) gauge() {
	p.cfg.Stats.ProposerQueued.Store(p.qUpdates)
	p.cfg.Stats.ProposerQueuedBytes.Store(p.qBytes)
}

// dedupe drops from ops the updates whose UUID is in the window (counted)
// and adds the others' UUIDs as proposed.
func (p *Proposer) dedupe(ops []raftlog.Op) []raftlog.Op {
	if p.window == nil {
		return ops
	}
	now := p.cfg.Now().UnixNano()
	out := ops[:0]
	for _, op := range ops {
		if op.Kind == raftlog.OpSet {
			if p.window.seen(op.Msg.UUID, now, false) {
				p.cfg.Stats.UpdatesDeduplicated.Add(1)
				continue
			}
			p.window.add(op.Msg.UUID, now, false)
		}
		out = append(out, op)
	}
	clear(ops[len(out):])
	p.cfg.Stats.DedupeWindow.Store(int64(p.window.len()))
	return out
}

// propose turns queued batches into entries while the window allows.
func (p *Proposer) propose(ctx actor.Context) {
	for len(p.queue) > 0 && p.inflight < p.cfg.Window && p.failed == nil && p.cfg.Raft != nil && p.leading() && p.warm {
		var ops []raftlog.Op
		var dones []func()
		size, k := 0, 0
		for k < len(p.queue) && (k == 0 || size+p.queue[k].size <= p.cfg.MaxEntryBytes) {
			pr := &p.queue[k]
			p.qBytes -= int64(pr.size)
			p.qUpdates -= int64(len(pr.ops))
			kept := p.dedupe(pr.ops)
			if len(kept) == 0 {
				if pr.done != nil {
					pr.done() // every update was a duplicate
				}
				k++
				continue
			}
			ops = append(ops, kept...)
			size += pr.size
			if pr.done != nil {
				dones = append(dones, pr.done)
			}
			k++
		}
		clear(p.queue[:k])
		p.queue = p.queue[k:]
		p.gauge()
		if len(ops) == 0 {
			continue
		}
		p.nextID++
		id := p.nextID
		done := joinDone(dones)
		if done == nil {
			done = func() {} // so that lost can tell whether the store took it
		}
		p.cfg.Proposals.Put(id, done)
		p.flying[id] = ops
		f := p.cfg.Raft.Apply(raftlog.AppendOps(make([]byte, 0, size+16), id, ops))
		p.inflight++
		self, root, n := ctx.Self(), ctx.ActorSystem().Root, len(ops)
		// The future resolves when the FSM has applied the entry, or with
		// an error (raft.ErrRaftShutdown at the latest).
		go func() { root.Send(self, &applied{id: id, err: f.Error(), n: n}) }()
	}
}

// fail handles an entry raft did not store: its updates are dropped (never
// published), and so is everything after it. Shutdown is not a failure.
func (p *Proposer) fail(m *applied) {
	done := p.cfg.Proposals.Take(m.id)
	if done == nil {
		return // the store got it after all
	}
	p.drop(done, m.n)
	if errors.Is(m.err, raft.ErrRaftShutdown) {
		return
	}
	if p.failed == nil {
		p.failed = m.err
		p.cfg.Stats.LogFailed.Store(true)
		p.cfg.Logger.Error("the log could not store updates: no longer accepting updates (restart once fixed)", "err", m.err)
	}
	for _, pr := range p.queue {
		p.drop(pr.done, len(pr.ops))
	}
	p.queue = nil
}

func (p *Proposer) drop(done func(), n int) {
	p.cfg.Stats.NotStored.Add(int64(n))
	for range n {
		p.cfg.Stats.Rejected(stats.SourceCollector, ReasonNotStored)
	}
	if done != nil {
		done()
	}
}

func joinDone(dones []func()) func() {
	switch len(dones) {
	case 0:
		return nil
	case 1:
		return dones[0]
	}
	return func() {
		for _, d := range dones {
			d()
		}
	}
}

// Proposals maps the entries this node proposed (by the id carried in the
// entry) to their batches' credits, from proposal until the store applies
// the entry. It is the one thing the proposer and the store share.
type Proposals struct {
	mu sync.Mutex
	m  map[uint64]func()
}

// Put records id's credit (nil: none).
func (t *Proposals) Put(id uint64, done func()) {
	if done == nil {
		return
	}
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[uint64]func())
	}
	t.m[id] = done
	t.mu.Unlock()
}

// Take removes and returns id's credit; nil when there is none (an entry
// from before a restart, or another node's).
func (t *Proposals) Take(id uint64) func() {
	if id == 0 {
		return nil
	}
	t.mu.Lock()
	d := t.m[id]
	delete(t.m, id)
	t.mu.Unlock()
	return d
}

func kvmsgKey(key []byte) kvmsg.Msg { return kvmsg.Msg{Key: key} }
