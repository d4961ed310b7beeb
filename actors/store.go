package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
)

// ViewRequest asks the store for a consistent snapshot of the map. The store
// answers ReplyTo with *View carrying Tag.
type ViewRequest struct {
	ReplyTo *actor.PID
	Tag     any
}

// View is the map exactly as it was after update Seq. Taking it costs O(1)
// (a copy-on-write clone); the reader walks it while the store goes on.
// History is the history id (empty until the log has named it).
type View struct {
	Seq     int64
	Map     *kvmap.View
	History string
	Tag     any
}

// Expire asks the proposer to delete keys whose ttl has passed, through the
// log. Each item names the update that set the ttl: a key overwritten since
// is left alone. Done (if set) is called once the batch is published or
// dropped: the reaper's credit.
type Expire struct {
	Items []ExpireItem
	Done  func()
}

// ExpireItem is one key due to expire.
type ExpireItem struct {
	Key []byte
	Seq int64
}

// StateRequest asks the store for its state (an O(1) view, the sequence and
// the history id) after every message before it: raft's FSM snapshot.
type StateRequest struct {
	Reply chan<- raftlog.State
}

// RestoreRequest replaces the store's whole state with a snapshot's; the
// store answers on Reply once it has.
type RestoreRequest struct {
	State raftlog.Restored
	Reply chan<- error
}

// StoreConfig configures the store.
type StoreConfig struct {
	// Handlers receive every *Committed batch, in order, after the
	// publisher: the reaper and the handler runners.
	Handlers []*actor.PID
	Stats    *stats.Server
	// Publisher receives every committed batch first, with the batch's
	// credit (see publish).
	Publisher *actor.PID
	// Capacity bounds the keys and bytes stored (nil: no bound).
	Capacity *Capacity
	// Proposals holds the credits of the entries this node proposed; the
	// store passes each entry's on with its Committed batch.
	Proposals *Proposals
}

// Store is the sequencer and the one writer of the key-value map: every
// state change of the server happens in its Receive, one message at a time.
// It applies what raft committed, in log order (*raftlog.Batch from the
// FSM): for each accepted update it takes the next sequence, stamps it into
// the message, applies it to the map and hands the batch to the handlers
// (publisher, reaper, anything registered). Nothing reaches a client before
// raft has committed it, since only the FSM feeds the store. It never
// blocks and never touches a socket.
type Store struct {
	cfg     StoreConfig
	seq     int64
	history string
	m       *kvmap.Map
}

// NewStore returns the store actor with an empty map.
func NewStore(cfg StoreConfig) *Store {
	if cfg.Proposals == nil {
		cfg.Proposals = &Proposals{}
	}
	return &Store{cfg: cfg, m: kvmap.New()}
}

// Receive handles *raftlog.Batch, *ViewRequest, *StateRequest and
// *RestoreRequest.
func (s *Store) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *raftlog.Batch:
		for i := range m.Entries {
			s.applyEntry(ctx, &m.Entries[i])
		}
	case *ViewRequest:
		ctx.Send(m.ReplyTo, &View{Seq: s.seq, Map: s.m.View(), History: s.history, Tag: m.Tag})
	case *StateRequest:
		m.Reply <- raftlog.State{Seq: s.seq, History: s.history, Map: s.m.View()}
	case *RestoreRequest:
		s.m, s.seq, s.history = m.State.Map, m.State.Seq, m.State.History
		s.cfg.Stats.Sequence.Store(s.seq)
		s.cfg.Stats.Keys.Store(int64(s.m.Len()))
		c := &Committed{Seq: s.seq, History: s.history, Replayed: true, Restored: s.m.View()}
		if s.cfg.Publisher != nil {
			ctx.Send(s.cfg.Publisher, &publish{Committed: c})
		}
		for _, h := range s.cfg.Handlers {
			ctx.Send(h, c)
		}
		m.Reply <- nil
	}
}

func (s *Store) applyEntry(ctx actor.Context, a *raftlog.Applied) {
	var done func()
	if !a.Replay {
		done = s.cfg.Proposals.Take(a.Proposal)
	}
	switch a.Kind {
	case raftlog.KindHistory:
		if s.history != "" {
			break // the first one names the history
		}
		s.history = a.History
		s.commit(ctx, &Committed{Seq: s.seq, History: s.history, Replayed: a.Replay}, done)
		return
	case raftlog.KindOps:
		if ups := s.applyOps(a.Ops); len(ups) > 0 {
			s.commit(ctx, &Committed{Updates: ups, Replayed: a.Replay}, done)
			return
		}
	}
	if done != nil {
		done()
	}
}

func (s *Store) applyOps(ops []raftlog.Op) []Update {
	ups := make([]Update, 0, len(ops))
	expired := 0
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case raftlog.OpSet:
			if !s.cfg.Capacity.Admit(s.m, op.Msg) {
				continue
			}
			s.seq++
			msg := op.Msg
			msg.Seq = s.seq
			u := Update{Msg: msg, TTL: time.Duration(op.TTLNanos)}
			if op.Expires != 0 && !msg.IsDelete() {
				u.ExpiresAt = time.Unix(0, op.Expires)
				s.m.ApplyExpiring(msg, op.Expires)
			} else {
				s.m.Apply(msg)
			}
			ups = append(ups, u)
		case raftlog.OpExpire:
			e, ok := s.m.Get(op.Msg.Key)
			if !ok || e.Seq() != op.Seq {
				continue // deleted or overwritten since the ttl was set
			}
			s.cfg.Capacity.Admit(s.m, kvmsg.Msg{Key: op.Msg.Key}) // a delete: its bytes come off
			s.m.Delete(op.Msg.Key)
			s.seq++
			expired++
			ups = append(ups, Update{Msg: kvmsg.Msg{Key: op.Msg.Key, Seq: s.seq}, Expired: true})
		}
	}
	s.cfg.Stats.Expirations.Add(int64(expired))
	return ups
}

func (s *Store) commit(ctx actor.Context, c *Committed, done func()) {
	s.cfg.Stats.Sequence.Store(s.seq)
	s.cfg.Stats.Keys.Store(int64(s.m.Len()))
	c.Seq, c.History = s.seq, s.history
	if s.cfg.Publisher != nil {
		ctx.Send(s.cfg.Publisher, &publish{Committed: c, release: done})
	} else if done != nil {
		done()
	}
	for _, h := range s.cfg.Handlers {
		ctx.Send(h, c)
	}
}
