package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/window"
)

// ViewRequest asks the store for a consistent snapshot of the map. The store
// answers ReplyTo with *View carrying Tag.
//
// With MinSeq set, the store holds the request until its sequence reaches
// MinSeq (a cluster node catching up with what a client has already seen),
// and drops it unanswered once Until has passed: the asker gave up then.
type ViewRequest struct {
	ReplyTo *actor.PID
	Tag     any
	MinSeq  int64
	Until   time.Time
}

// View is the map exactly as it was after update Seq. Taking it costs O(1)
// (a copy-on-write clone); the reader walks it while the store goes on.
// History is the history id (empty until the log has named it). Window is
// the resume window up to Seq, taken with the map in the same step (nil:
// resume is off).
type View struct {
	Seq     int64
	Map     *kvmap.View
	History string
	Window  *window.View
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
	// Window bounds the resume window in bytes (0: no window, resume off).
	Window int64
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
	w       *window.Window // nil: resume off
	held    []*ViewRequest // waiting for their MinSeq (ViewRequest)
}

// NewStore returns the store actor with an empty map.
func NewStore(cfg StoreConfig) *Store {
	if cfg.Proposals == nil {
		cfg.Proposals = &Proposals{}
	}
	s := &Store{cfg: cfg, m: kvmap.New()}
	if cfg.Window > 0 {
		s.w = window.New(cfg.Window, 0)
	}
	return s
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
		if m.MinSeq > s.seq {
			s.held = append(s.held, m)
			s.answerHeld(ctx) // drops the expired ones, so that held stays bounded
			return
		}
		s.answerView(ctx, m)
	case *StateRequest:
		m.Reply <- raftlog.State{Seq: s.seq, History: s.history, Map: s.m.View(), Window: s.windowView()}
	case *RestoreRequest:
		s.m, s.seq, s.history = m.State.Map, m.State.Seq, m.State.History
		s.restoreWindow(m.State.Window)
		s.answerHeld(ctx)
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
	s.appendWindow(ups)
	return ups
}

func (s *Store) answerView(ctx actor.Context, m *ViewRequest) {
	ctx.Send(m.ReplyTo, &View{Seq: s.seq, Map: s.m.View(), History: s.history, Window: s.windowView(), Tag: m.Tag})
}

// answerHeld answers the held view requests the sequence has reached and
// drops those past their Until.
func (s *Store) answerHeld(ctx actor.Context) {
	if len(s.held) == 0 {
		return
	}
	now := time.Now()
	kept := s.held[:0]
	for _, m := range s.held {
		switch {
		case m.MinSeq <= s.seq:
			s.answerView(ctx, m)
		case now.Before(m.Until):
			kept = append(kept, m)
		}
	}
	clear(s.held[len(kept):])
	s.held = kept
}

func (s *Store) commit(ctx actor.Context, c *Committed, done func()) {
	s.answerHeld(ctx)
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

// windowView is the resume window now (nil: off).
func (s *Store) windowView() *window.View {
	if s.w == nil {
		return nil
	}
	return s.w.View()
}

// appendWindow adds the updates just numbered to the resume window,
// exactly as they are published.
func (s *Store) appendWindow(ups []Update) {
	if s.w == nil || len(ups) == 0 {
		return
	}
	now := time.Now()
	for i := range ups {
		if err := s.w.Append(ups[i].Msg, now); err != nil {
			// Cannot happen (the store numbers without gaps); should it,
			// the window restarts here rather than hold a gap.
			s.w = window.New(s.cfg.Window, s.seq)
			break
		}
	}
	s.windowStats()
}

// restoreWindow adopts a restored snapshot's window, or starts an empty one
// at the restored sequence when it has none (a snapshot from before the
// window, or from a node with resume off).
func (s *Store) restoreWindow(w *window.Window) {
	switch {
	case s.cfg.Window <= 0:
		s.w = nil
	case w == nil || w.Seq() != s.seq:
		s.w = window.New(s.cfg.Window, s.seq)
	default:
		w.SetLimit(s.cfg.Window)
		s.w = w
	}
	s.windowStats()
}

func (s *Store) windowStats() {
	if s.w == nil {
		return
	}
	st := s.cfg.Stats
	st.ResumeWindowSequences.Store(s.w.Seq() - s.w.Base())
	st.ResumeWindowBytes.Store(s.w.Bytes())
	st.ResumeWindowBase.Store(s.w.Base())
	var oldest int64
	if t := s.w.Oldest(); !t.IsZero() {
		oldest = t.UnixNano()
	}
	st.ResumeWindowOldestNanos.Store(oldest)
}
