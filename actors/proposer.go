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
}

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
type Proposer struct {
	cfg      ProposerConfig
	queue    []proposal
	inflight int
	flushing bool
	nextID   uint64
	failed   error
	drains   []chan<- struct{}
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Proposals == nil {
		cfg.Proposals = &Proposals{}
	}
	// Ids only need to differ from those of entries still in flight;
	// starting from the clock keeps them apart from a previous run's.
	return &Proposer{cfg: cfg, nextID: uint64(time.Now().UnixNano())}
}

// Receive handles *Updates, *Expire and the proposer's own messages.
func (p *Proposer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *Updates:
		p.cfg.Stats.StoreBacklog.Add(-1)
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
		p.enqueue(ctx, pr)
	case *Expire:
		pr := proposal{ops: make([]raftlog.Op, len(m.Items)), done: m.Done}
		for i, it := range m.Items {
			op := raftlog.Op{Kind: raftlog.OpExpire, Msg: kvmsgKey(it.Key), Seq: it.Seq}
			pr.ops[i] = op
			pr.size += op.Size()
		}
		p.enqueue(ctx, pr)
	case *LogReady:
		p.cfg.Raft = m.Raft
		p.propose(ctx)
	case *Drain:
		p.drains = append(p.drains, m.Reply)
		p.checkDrained()
	case *flush:
		p.flushing = false
		p.propose(ctx)
	case *applied:
		p.inflight--
		if m.err != nil {
			p.fail(m)
		}
		p.propose(ctx)
		p.checkDrained()
	}
}

func (p *Proposer) checkDrained() {
	if len(p.drains) == 0 || p.inflight > 0 || (len(p.queue) > 0 && p.cfg.Raft != nil) {
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
	if !p.flushing {
		p.flushing = true
		ctx.Send(ctx.Self(), &flush{})
	}
}

// propose turns queued batches into entries while the window allows.
func (p *Proposer) propose(ctx actor.Context) {
	for len(p.queue) > 0 && p.inflight < p.cfg.Window && p.failed == nil && p.cfg.Raft != nil {
		var ops []raftlog.Op
		var dones []func()
		size, k := 0, 0
		for k < len(p.queue) && (k == 0 || size+p.queue[k].size <= p.cfg.MaxEntryBytes) {
			pr := &p.queue[k]
			ops = append(ops, pr.ops...)
			size += pr.size
			if pr.done != nil {
				dones = append(dones, pr.done)
			}
			k++
		}
		clear(p.queue[:k])
		p.queue = p.queue[k:]
		p.nextID++
		id := p.nextID
		p.cfg.Proposals.Put(id, joinDone(dones))
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
