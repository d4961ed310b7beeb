package actors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
	"github.com/clonekv/clonekv/transport/adapter"
)

// Reasons the snapshot responder rejects a request.
const (
	ReasonRequestFrames  = "frame_count"
	ReasonUnknownCommand = "unknown_command"
	ReasonSubtreeTooLong = "subtree_too_long"
	ReasonOverloaded     = "overloaded"
)

// SnapshotConfig configures the snapshot responder.
type SnapshotConfig struct {
	Router *actor.PID // the ROUTER's adapter.Router
	Store  *actor.PID
	Stats  *stats.Server
	Log    *stats.RejectLog
	Logger *slog.Logger
	// MaxSubtree bounds the subtree a client may ask for (the key limit).
	MaxSubtree int
	// ChunkSize is how many KVSYNCs go to the router per batch (default
	// 256), and InFlight how many batches per stream may wait there
	// (default 2): together they bound the memory a stream holds while the
	// socket paces it.
	ChunkSize int
	InFlight  int
	// MaxStreams is how many snapshots stream at once (default 64); later
	// requests wait, up to MaxWaiting (default 4096), then are refused.
	MaxStreams int
	MaxWaiting int
}

// Snapshot answers ICANHAZ? requests. For each it asks the store for a View
// (O(1), consistent at the view's sequence), then walks the requested
// subtree in key order, handing the router chunks of KVSYNC messages and
// producing the next chunk only when the router reports the last one
// written. The router paces each peer at its socket's high-water mark, so a
// million-key snapshot holds only a few chunks in memory, and a slow joiner
// delays only itself. One peer gets one stream at a time, so a client that
// asks twice gets two whole snapshots, one after the other.
type Snapshot struct {
	cfg     SnapshotConfig
	nextID  int64
	active  map[string]*stream // by peer
	waiting []*stream
}

// stream is one snapshot on its way to one peer.
type stream struct {
	id       int64
	peer     []byte
	subtree  []byte
	started  time.Time
	seq      int64
	history  string
	cur      *kvmap.Cursor
	inflight int
	finished bool // the final chunk (with KTHXBAI) has been produced
	aborted  bool
	keys     int64
	spare    []*chunk
}

// chunk is one batch of a stream's messages; its buffers are reused once the
// router has written it.
type chunk struct {
	s     *stream
	msgs  transport.Flat
	final bool
}

// NewSnapshot returns the snapshot responder actor.
func NewSnapshot(cfg SnapshotConfig) *Snapshot {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 256
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 2
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Snapshot{cfg: cfg, active: make(map[string]*stream)}
}

// Receive handles *adapter.Request, *View and *adapter.Sent.
func (a *Snapshot) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *adapter.Request:
		a.request(ctx, m)
	case *View:
		s, ok := m.Tag.(*stream)
		if !ok {
			return
		}
		s.seq, s.history = m.Seq, m.History
		s.cur = m.Map.Cursor(s.subtree)
		a.fill(ctx, s)
	case *adapter.Sent:
		ch, ok := m.Tag.(*chunk)
		if !ok {
			return
		}
		a.sent(ctx, ch, m.Err)
	case *actor.Stopping:
		for _, s := range a.active {
			if s.cur != nil {
				s.cur.Close()
			}
		}
	}
}

var errUnknownCommand = errors.New("unknown command")

func (a *Snapshot) request(ctx actor.Context, req *adapter.Request) {
	peerAttr := slog.String("peer", fmt.Sprintf("%x", req.Peer))
	if req.Count != 2 {
		a.cfg.Log.Reject(stats.SourceSnapshot, ReasonRequestFrames,
			fmt.Errorf("snapshot request has %d frames, want 2 (%q, subtree)", req.Count, kvmsg.CmdSnapshot), peerAttr)
		return
	}
	if string(req.Frames[0]) != kvmsg.CmdSnapshot {
		cmd := req.Frames[0]
		if len(cmd) > 32 {
			cmd = cmd[:32]
		}
		a.cfg.Log.Reject(stats.SourceSnapshot, ReasonUnknownCommand, fmt.Errorf("%w %q", errUnknownCommand, cmd), peerAttr)
		return
	}
	subtree := req.Frames[1]
	if a.cfg.MaxSubtree > 0 && len(subtree) > a.cfg.MaxSubtree {
		a.cfg.Log.Reject(stats.SourceSnapshot, ReasonSubtreeTooLong,
			fmt.Errorf("subtree is %d bytes, limit %d", len(subtree), a.cfg.MaxSubtree), peerAttr)
		return
	}
	a.nextID++
	s := &stream{id: a.nextID, peer: req.Peer, subtree: subtree, started: time.Now()}
	if len(a.active) < a.cfg.MaxStreams && a.active[string(s.peer)] == nil {
		a.start(ctx, s)
		return
	}
	if len(a.waiting) >= a.cfg.MaxWaiting {
		a.cfg.Log.Reject(stats.SourceSnapshot, ReasonOverloaded,
			fmt.Errorf("%d snapshot requests already waiting", len(a.waiting)), peerAttr)
		return
	}
	a.waiting = append(a.waiting, s)
}

func (a *Snapshot) start(ctx actor.Context, s *stream) {
	a.active[string(s.peer)] = s
	a.cfg.Stats.StreamsInFlight.Add(1)
	ctx.Send(a.cfg.Store, &ViewRequest{ReplyTo: ctx.Self(), Tag: s})
}

// fill hands the router chunks until the stream has InFlight of them there.
func (a *Snapshot) fill(ctx actor.Context, s *stream) {
	for s.inflight < a.cfg.InFlight && !s.finished {
		ch := a.produce(s)
		s.inflight++
		ctx.Send(a.cfg.Router, &adapter.Send{Peer: s.peer, Msgs: &ch.msgs, ReplyTo: ctx.Self(), Tag: ch})
	}
}

// produce builds the stream's next chunk: up to ChunkSize KVSYNCs and, after
// the last key, the KTHXBAI.
func (a *Snapshot) produce(s *stream) *chunk {
	n := a.cfg.ChunkSize
	var ch *chunk
	if k := len(s.spare); k > 0 {
		ch, s.spare = s.spare[k-1], s.spare[:k-1]
	} else {
		ch = &chunk{s: s, msgs: transport.Flat{
			Data:   make([]byte, 0, 64*(n+1)),
			Sizes:  make([]uint64, 0, (n+1)*kvmsg.NumFrames),
			PerMsg: kvmsg.NumFrames,
		}}
	}
	ch.msgs.Reset()
	for ch.msgs.Len() < n {
		e, ok := s.cur.Next()
		if !ok {
			end := kvmsg.Msg{Key: []byte(kvmsg.KeySnapshotEnd), Seq: s.seq, Body: s.subtree}
			if s.history != "" {
				end.Props = []byte("history=" + s.history + "\n")
			}
			ch.add(end.Key, end.Seq, nil, end.Props, end.Body)
			ch.final, s.finished = true, true
			break
		}
		ch.add(e.Key(), e.Seq(), e.UUID(), e.Props(), e.Body())
		s.keys++
	}
	return ch
}

func (ch *chunk) add(key []byte, seq int64, uuid, props, body []byte) {
	var sb [kvmsg.SeqLen]byte
	binary.BigEndian.PutUint64(sb[:], uint64(seq))
	ch.msgs.Add(key, sb[:], uuid, props, body)
}

func (a *Snapshot) sent(ctx actor.Context, ch *chunk, err error) {
	s := ch.s
	s.inflight--
	if s.aborted {
		return
	}
	if err != nil {
		s.aborted = true
		a.cfg.Stats.SnapshotsAborted.Add(1)
		a.cfg.Logger.Debug("snapshot abandoned", "peer", fmt.Sprintf("%x", s.peer), "subtree", string(s.subtree), "keys_sent", s.keys, "err", err)
		a.finish(ctx, s)
		return
	}
	if ch.final {
		d := time.Since(s.started)
		a.cfg.Stats.SnapshotsServed.Add(1)
		a.cfg.Stats.SnapshotKeys.Add(s.keys)
		a.cfg.Stats.SnapshotNanos.Add(int64(d))
		a.cfg.Logger.Debug("snapshot sent", "peer", fmt.Sprintf("%x", s.peer), "subtree", string(s.subtree), "seq", s.seq, "keys", s.keys, "duration", d)
		a.finish(ctx, s)
		return
	}
	ch.final = false
	s.spare = append(s.spare, ch)
	a.fill(ctx, s)
}

// finish frees the stream's slot and starts the waiting requests that can
// go now.
func (a *Snapshot) finish(ctx actor.Context, s *stream) {
	if s.cur != nil {
		s.cur.Close()
	}
	s.spare = nil
	delete(a.active, string(s.peer))
	a.cfg.Stats.StreamsInFlight.Add(-1)
	kept := a.waiting[:0]
	for _, w := range a.waiting {
		if len(a.active) < a.cfg.MaxStreams && a.active[string(w.peer)] == nil {
			w.started = time.Now()
			a.start(ctx, w)
			continue
		}
		kept = append(kept, w)
	}
	for i := len(kept); i < len(a.waiting); i++ {
		a.waiting[i] = nil
	}
	a.waiting = kept
}
