package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
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
type View struct {
	Seq int64
	Map *kvmap.View
	Tag any
}

// Expire asks the store to delete keys whose ttl has passed. Each item names
// the update that set the ttl: a key overwritten since is left alone.
type Expire struct {
	Items []ExpireItem
}

// ExpireItem is one key due to expire.
type ExpireItem struct {
	Key []byte
	Seq int64
}

// StoreConfig configures the store.
type StoreConfig struct {
	// Publisher receives every committed batch first, with the batch's
	// credit (see publish).
	Publisher *actor.PID
	// Handlers receive every *Committed batch, in order, after the
	// publisher: the reaper and the handler runners.
	Handlers []*actor.PID
	Stats    *stats.Server
	// Now is the clock (tests may replace it); default time.Now.
	Now func() time.Time
	// StartSeq is the sequence to continue from (0 for a fresh server).
	StartSeq int64
	// Capacity bounds the keys and bytes stored (nil: no bound).
	Capacity *Capacity
}

// Store is the sequencer and the one writer of the key-value map: every
// state change of the server happens in its Receive, one message at a time.
// For each accepted update it takes the next sequence, stamps it into the
// message, applies it to the map and hands the batch to the handlers
// (publisher, reaper, anything registered). It never blocks and never
// touches a socket.
type Store struct {
	cfg StoreConfig
	seq int64
	m   *kvmap.Map
}

// NewStore returns the store actor with an empty map.
func NewStore(cfg StoreConfig) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, seq: cfg.StartSeq, m: kvmap.New()}
}

// Receive handles *Updates, *ViewRequest and *Expire.
func (s *Store) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *Updates:
		s.cfg.Stats.StoreBacklog.Add(-1)
		s.commit(ctx, s.applyUpdates(m.Items), m.Done)
	case *ViewRequest:
		ctx.Send(m.ReplyTo, &View{Seq: s.seq, Map: s.m.View(), Tag: m.Tag})
	case *Expire:
		if ups := s.applyExpiries(m.Items); len(ups) > 0 {
			s.commit(ctx, ups, nil)
		}
	}
}

func (s *Store) applyUpdates(items []Pending) []Update {
	now := s.cfg.Now()
	ups := make([]Update, 0, len(items))
	for _, p := range items {
		if !s.cfg.Capacity.Admit(s.m, p.Msg) {
			continue
		}
		s.seq++
		msg := p.Msg
		msg.Seq = s.seq
		s.m.Apply(msg)
		u := Update{Msg: msg, TTL: p.TTL}
		if p.TTL > 0 && !msg.IsDelete() {
			u.ExpiresAt = now.Add(p.TTL)
		}
		ups = append(ups, u)
	}
	return ups
}

func (s *Store) applyExpiries(items []ExpireItem) []Update {
	var ups []Update
	for _, it := range items {
		e, ok := s.m.Get(it.Key)
		if !ok || e.Seq() != it.Seq {
			continue // deleted or overwritten since the ttl was set
		}
		s.cfg.Capacity.Admit(s.m, kvmsg.Msg{Key: it.Key}) // a delete: its bytes come off
		s.m.Delete(it.Key)
		s.seq++
		ups = append(ups, Update{Msg: kvmsg.Msg{Key: it.Key, Seq: s.seq}, Expired: true})
	}
	s.cfg.Stats.Expirations.Add(int64(len(ups)))
	return ups
}

// commit fans a batch out: to the publisher with release (the collector's
// credit for the batch, nil if it has none), then to the handlers.
func (s *Store) commit(ctx actor.Context, ups []Update, release func()) {
	s.cfg.Stats.Sequence.Store(s.seq)
	s.cfg.Stats.Keys.Store(int64(s.m.Len()))
	c := &Committed{Updates: ups}
	if s.cfg.Publisher != nil {
		ctx.Send(s.cfg.Publisher, &publish{Committed: c, release: release})
	} else if release != nil {
		release()
	}
	for _, h := range s.cfg.Handlers {
		ctx.Send(h, c)
	}
}
