package actors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
)

// Why a join is refused or a stream ended early: the value of the
// KTHXBAI's kvmsg.PropRefused property and the metric labels.
const (
	RefusedBusy     = "busy"              // MaxWaiting requests already wait
	RefusedTooMany  = "too_many_requests" // the peer already has MaxWaitingPerPeer waiting
	RefusedStalled  = "stalled"           // the peer took nothing within the deadline
	AbortedPeerGone = "peer_gone"         // the peer disconnected mid-stream
	AbortedStopped  = "stopped"           // the server is stopping
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
	// 256), ChunkBytes how many bytes at most (default 64 KiB; a chunk
	// holds at least one message), and InFlight how many batches per
	// stream may wait there (default 2): together they bound the memory a
	// stream holds while the socket paces it.
	ChunkSize  int
	ChunkBytes int
	InFlight   int
	// MaxStreams is how many snapshots stream at once (default 512); later
	// requests wait, up to MaxWaiting (default 4096) in all and
	// MaxWaitingPerPeer (default 16) from one peer, then are refused.
	MaxStreams        int
	MaxWaiting        int
	MaxWaitingPerPeer int
	// Deadline ends a stream whose peer takes nothing for that long
	// (default 10s): its view is released and the peer is sent a KTHXBAI
	// refused=stalled. The socket hands credit back every RouterHWM/2
	// messages the peer reads, so a reader of 100 messages a second shows
	// progress about every 5 s: keep Deadline above that.
	//
	// StallAfter (default 1s, at most Deadline) is when a stream that took
	// nothing stops counting against MaxStreams, so peers that stopped
	// reading cannot hold every slot; it counts again once its peer takes
	// something. At most MaxStalled streams (default 4×MaxStreams) are
	// stalled at once: past that the longest stalled are ended first.
	Deadline   time.Duration
	StallAfter time.Duration
	MaxStalled int
	// Resume turns the resume extension on (resume.go): KTHXBAI says
	// resume=1 and three-frame requests may get a delta.
	Resume bool
	// AheadWait is how long a resume request from a client ahead of this
	// node (the same history, since above the node's sequence) waits for
	// the node to catch up before it is answered with a whole snapshot
	// (reason=ahead). A cluster follower can be behind what the leader
	// has already published by a heartbeat or, when the leader died, by an
	// election; answering at once would move the client's map back to an
	// older state. 0 answers at once: a single node is never behind what
	// it published.
	AheadWait time.Duration
}

// Snapshot answers ICANHAZ? requests. For each it asks the store for a View
// (O(1), consistent at the view's sequence), then walks the requested
// subtree in key order, handing the router chunks of KVSYNC messages and
// producing the next chunk only when the router reports the last one
// written. The router paces each peer at its socket's high-water mark, so a
// million-key snapshot holds only a few chunks in memory, and a slow joiner
// delays only itself. One peer gets one stream at a time, so a client that
// asks twice gets two whole snapshots, one after the other.
//
// Streams make progress or end: a stream whose peer takes nothing for
// StallAfter no longer holds a slot, and one that takes nothing for
// Deadline is ended, releasing its view. A request that cannot be queued,
// and a stream ended that way, are answered with a KTHXBAI whose sequence
// is 0 and whose properties say refused=<reason>.
type Snapshot struct {
	cfg     SnapshotConfig
	nextID  int64
	active  map[string]*stream // by peer, from start until its last Sent
	waiting []*stream
	perPeer map[string]int      // waiting requests by peer
	later   map[string][]string // refusals for peers with a stream on the wire (their subtrees)
	owed    map[string]int      // refusals at the router, by peer
	// streaming counts active streams neither stalled nor ending (the
	// ones MaxStreams bounds); stalled the stalled ones.
	streaming, stalled int
	tick               *ticker
}

// stream is one snapshot on its way to one peer.
type stream struct {
	id       int64
	peer     []byte
	subtree  []byte
	started  time.Time
	progress time.Time // start, then the last chunk the peer took
	viewAt   time.Time // when the view arrived (zero: not yet, or released)
	seq      int64
	history  string
	cur      *kvmap.Cursor
	inflight int
	finished bool // the final chunk (with KTHXBAI) has been produced
	stalled  bool // took nothing for StallAfter: not counted in streaming
	ending   bool // aborted: waiting for its chunks to come back
	keys     int64
	spare    []*chunk
	resume   resumeAsk // the request's third frame, if any (resume.go)
	// aheadUntil is when a resume request ahead of the node stops waiting
	// for it (zero: it has not waited); awaiting is set while the store
	// holds its view request (ViewRequest.MinSeq); viewed once it has a
	// view (a held request the store answers after the deadline's own is
	// then ignored).
	aheadUntil time.Time
	awaiting   bool
	viewed     bool
}

// chunk is one batch of a stream's messages; its buffers are reused once the
// router has written it.
type chunk struct {
	s     *stream
	msgs  transport.Flat
	final bool
}

// refusal tags a refused KTHXBAI at the router.
type refusal struct{ peer string }

// snapshotTick drives the responder's deadlines.
type snapshotTick struct{}

// NewSnapshot returns the snapshot responder actor.
func NewSnapshot(cfg SnapshotConfig) *Snapshot {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 256
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 64 << 10
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 2
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 512
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = 4096
	}
	if cfg.MaxWaitingPerPeer <= 0 {
		cfg.MaxWaitingPerPeer = 16
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 10 * time.Second
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = time.Second
	}
	cfg.StallAfter = min(cfg.StallAfter, cfg.Deadline)
	if cfg.MaxStalled <= 0 {
		cfg.MaxStalled = 4 * cfg.MaxStreams
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Snapshot{cfg: cfg, active: make(map[string]*stream), perPeer: make(map[string]int),
		later: make(map[string][]string), owed: make(map[string]int)}
}

// tickEvery is how often deadlines are checked: a quarter of the shortest,
// between 5ms and 250ms.
func (a *Snapshot) tickEvery() time.Duration {
	return min(max(a.cfg.StallAfter/4, 5*time.Millisecond), 250*time.Millisecond)
}

// Receive handles *adapter.Request, *View, *adapter.Sent and the ticks.
func (a *Snapshot) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if a.tick == nil {
			a.tick = startTicker(ctx.ActorSystem().Root, ctx.Self(), a.tickEvery(), func() any { return &snapshotTick{} })
		}
	case *adapter.Request:
		a.request(ctx, m)
	case *View:
		s, ok := m.Tag.(*stream)
		if !ok || s.ending || s.viewed {
			return
		}
		now := time.Now()
		if a.awaitAhead(ctx, s, m, now) {
			return
		}
		s.awaiting, s.viewed = false, true
		s.seq, s.history = m.Seq, m.History
		s.progress = now // waiting for the view (or the node) is not the peer's idleness
		if !a.startDelta(s, m) {
			s.cur = m.Map.Cursor(s.subtree)
		}
		s.viewAt = now
		a.fill(ctx, s)
	case *adapter.Sent:
		switch t := m.Tag.(type) {
		case *chunk:
			a.sent(ctx, t, m.Err)
		case *refusal:
			if a.owed[t.peer]--; a.owed[t.peer] <= 0 {
				delete(a.owed, t.peer)
			}
		}
	case *snapshotTick:
		a.check(ctx, time.Now())
	case *actor.Stopping:
		a.tick.Stop()
		for _, s := range a.active {
			a.release(s)
		}
	}
}

var errUnknownCommand = errors.New("unknown command")

func (a *Snapshot) request(ctx actor.Context, req *adapter.Request) {
	peerAttr := slog.String("peer", fmt.Sprintf("%x", req.Peer))
	if req.Count != 2 && req.Count != 3 {
		a.cfg.Log.Reject(stats.SourceSnapshot, ReasonRequestFrames,
			fmt.Errorf("snapshot request has %d frames, want 2 (%q, subtree) or 3 (resume props)", req.Count, kvmsg.CmdSnapshot), peerAttr)
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
	s := &stream{id: a.nextID, peer: req.Peer, subtree: subtree}
	if req.Count == 3 {
		s.resume = a.parseResume(req.Frames[2], peerAttr)
	}
	peer := string(s.peer)
	switch {
	case a.streaming < a.cfg.MaxStreams && a.active[peer] == nil:
		a.start(ctx, s)
	case a.perPeer[peer] >= a.cfg.MaxWaitingPerPeer:
		a.refuse(ctx, s.peer, subtree, RefusedTooMany, peerAttr, slog.Int("waiting_from_peer", a.perPeer[peer]))
	case len(a.waiting) >= a.cfg.MaxWaiting:
		a.refuse(ctx, s.peer, subtree, RefusedBusy, peerAttr, slog.Int("waiting", len(a.waiting)))
	default:
		a.waiting = append(a.waiting, s)
		a.perPeer[peer]++
		a.cfg.Stats.SnapshotsWaiting.Store(int64(len(a.waiting)))
	}
}

// refuse answers a request it will not queue. A peer with a stream on
// the wire gets the refusal after that stream's KTHXBAI, so that it never
// lands between another snapshot's messages.
func (a *Snapshot) refuse(ctx actor.Context, peer, subtree []byte, reason string, attrs ...any) {
	a.cfg.Stats.SnapshotRefusals.Add(reason, 1)
	a.cfg.Log.Note(stats.SourceSnapshot, slog.LevelWarn, "snapshot request refused", append([]any{"reason", reason}, attrs...)...)
	if s := a.active[string(peer)]; s != nil && !s.ending {
		if l := a.later[string(peer)]; len(l) < a.cfg.MaxWaitingPerPeer {
			a.later[string(peer)] = append(l, string(subtree))
		}
		return
	}
	a.sendRefusal(ctx, peer, subtree, reason, false)
}

// sendRefusal hands the router a KTHXBAI with sequence 0, the subtree as
// body and refused=reason. replace (a stalled stream's end) drops what is
// still queued for the peer first.
func (a *Snapshot) sendRefusal(ctx actor.Context, peer, subtree []byte, reason string, replace bool) {
	if a.owed[string(peer)] >= a.cfg.MaxWaitingPerPeer && !replace {
		return // the peer is not reading its refusals: one more says nothing new
	}
	props := kvmsg.SetProp(nil, kvmsg.PropRefused, reason)
	var f transport.Flat
	f.PerMsg = kvmsg.NumFrames
	var sb [kvmsg.SeqLen]byte
	f.Add([]byte(kvmsg.KeySnapshotEnd), sb[:], nil, props, subtree)
	a.owed[string(peer)]++
	send := &adapter.Send{Peer: peer, Msgs: &f, ReplyTo: ctx.Self(), Tag: &refusal{string(peer)}, Replace: replace}
	if !replace {
		// A refusal of a fresh request is worth little late. The one that
		// ends a stalled stream waits for as long as the peer stays
		// connected (one small message per peer; ZMTP heartbeats drop a
		// peer that never reads), so that whatever it read of the stream
		// is always followed by the KTHXBAI that says it is incomplete.
		send.Deadline = time.Now().Add(a.cfg.Deadline)
	}
	ctx.Send(a.cfg.Router, send)
}

func (a *Snapshot) start(ctx actor.Context, s *stream) {
	now := time.Now()
	s.started, s.progress = now, now
	a.active[string(s.peer)] = s
	a.streaming++
	a.cfg.Stats.StreamsInFlight.Add(1)
	ctx.Send(a.cfg.Store, &ViewRequest{ReplyTo: ctx.Self(), Tag: s})
}

// fill hands the router chunks until the stream has InFlight of them there.
func (a *Snapshot) fill(ctx actor.Context, s *stream) {
	for s.inflight < a.cfg.InFlight && !s.finished && !s.ending && (s.cur != nil || s.resume.delta != nil) {
		attained := s.keys
		ch := a.produce(s)
		a.countResume(s, ch)
		s.inflight++
		ctx.Send(a.cfg.Router, &adapter.Send{Peer: s.peer, Msgs: &ch.msgs, ReplyTo: ctx.Self(), Tag: ch, Attained: attained})
	}
}

// produce builds the stream's next chunk: up to ChunkSize KVSYNCs (and
// ChunkBytes) and, after the last key, the KTHXBAI.
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
	if s.resume.delta != nil {
		a.produceDelta(s, ch)
		return ch
	}
	for ch.msgs.Len() < n && len(ch.msgs.Data) < a.cfg.ChunkBytes {
		e, ok := s.cur.Next()
		if !ok {
			end := kvmsg.Msg{Key: []byte(kvmsg.KeySnapshotEnd), Seq: s.seq, Body: s.subtree, Props: a.endProps(s)}
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
	if s.ending {
		if s.inflight == 0 {
			a.remove(ctx, s)
		}
		return
	}
	if err != nil {
		reason := AbortedPeerGone
		if errors.Is(err, adapter.ErrStopped) {
			reason = AbortedStopped
		}
		a.abort(ctx, s, reason, err)
		return
	}
	s.progress = time.Now()
	if s.stalled {
		s.stalled = false
		a.stalled--
		a.streaming++
	}
	if ch.final {
		d := time.Since(s.started)
		a.cfg.Stats.SnapshotsServed.Add(1)
		a.cfg.Stats.SnapshotKeys.Add(s.keys)
		a.cfg.Stats.SnapshotNanos.Add(int64(d))
		a.resumeDone(s)
		a.cfg.Logger.Debug("snapshot sent", "peer", fmt.Sprintf("%x", s.peer), "subtree", string(s.subtree), "seq", s.seq, "keys", s.keys, "duration", d)
		a.leave(s)
		a.remove(ctx, s)
		return
	}
	ch.final = false
	s.spare = append(s.spare, ch)
	a.fill(ctx, s)
}

// leave takes s out of the counts and releases its view.
func (a *Snapshot) leave(s *stream) {
	if s.stalled {
		a.stalled--
	} else {
		a.streaming--
	}
	a.cfg.Stats.StreamsInFlight.Add(-1)
	a.release(s)
}

// release lets go of the stream's view and buffers.
func (a *Snapshot) release(s *stream) {
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	s.resume.delta = nil
	s.viewAt = time.Time{}
	s.spare = nil
}

// abort ends s before its KTHXBAI. A stalled peer is sent the refused
// KTHXBAI in place of what is still queued for it; a gone one nothing.
func (a *Snapshot) abort(ctx actor.Context, s *stream, reason string, err error) {
	a.leave(s)
	s.ending = true
	a.cfg.Stats.SnapshotsAborted.Add(1)
	a.cfg.Stats.SnapshotAborts.Add(reason, 1)
	delete(a.later, string(s.peer))
	attrs := []any{"peer", fmt.Sprintf("%x", s.peer), "subtree", string(s.subtree), "keys_sent", s.keys, "reason", reason}
	if reason == RefusedStalled {
		a.cfg.Log.Note(stats.SourceSnapshot, slog.LevelWarn, "snapshot stream ended: the client took nothing", append(attrs, "idle", time.Since(s.progress).Round(time.Millisecond))...)
		a.sendRefusal(ctx, s.peer, s.subtree, reason, true)
	} else {
		a.cfg.Logger.Debug("snapshot abandoned", append(attrs, "err", err)...)
	}
	if s.inflight == 0 {
		a.remove(ctx, s)
	}
}

// remove frees the peer for its next request, sends the refusals that
// waited for this stream, and starts the waiting requests that can go now.
func (a *Snapshot) remove(ctx actor.Context, s *stream) {
	if a.active[string(s.peer)] == s {
		delete(a.active, string(s.peer))
	}
	for _, sub := range a.later[string(s.peer)] {
		a.sendRefusal(ctx, s.peer, []byte(sub), RefusedTooMany, false)
	}
	delete(a.later, string(s.peer))
	a.admit(ctx)
}

// admit starts waiting requests, oldest first, while slots are free.
func (a *Snapshot) admit(ctx actor.Context) {
	if a.streaming >= a.cfg.MaxStreams || len(a.waiting) == 0 {
		return
	}
	kept := a.waiting[:0]
	for _, w := range a.waiting {
		if a.streaming < a.cfg.MaxStreams && a.active[string(w.peer)] == nil {
			if a.perPeer[string(w.peer)]--; a.perPeer[string(w.peer)] <= 0 {
				delete(a.perPeer, string(w.peer))
			}
			a.start(ctx, w)
			continue
		}
		kept = append(kept, w)
	}
	clear(a.waiting[len(kept):])
	a.waiting = kept
	a.cfg.Stats.SnapshotsWaiting.Store(int64(len(a.waiting)))
}

// check applies the deadlines: streams idle for StallAfter stop holding a
// slot, those idle for Deadline end, and beyond MaxStalled the longest
// stalled end early. It also updates the gauges.
func (a *Snapshot) check(ctx actor.Context, now time.Time) {
	var stalled []*stream
	for _, s := range a.active {
		if s.ending {
			continue
		}
		if s.awaiting {
			// Ahead of this node and held by the store: past the wait,
			// take the view as it is (a full snapshot, reason=ahead).
			if !now.Before(s.aheadUntil) {
				s.awaiting = false
				ctx.Send(a.cfg.Store, &ViewRequest{ReplyTo: ctx.Self(), Tag: s})
			}
			continue
		}
		idle := now.Sub(s.progress)
		if idle >= a.cfg.Deadline {
			a.abort(ctx, s, RefusedStalled, nil)
			continue
		}
		if !s.stalled && idle >= a.cfg.StallAfter {
			s.stalled = true
			a.streaming--
			a.stalled++
		}
		if s.stalled {
			stalled = append(stalled, s)
		}
	}
	if over := len(stalled) - a.cfg.MaxStalled; over > 0 {
		slices.SortFunc(stalled, func(x, y *stream) int { return x.progress.Compare(y.progress) })
		for _, s := range stalled[:over] {
			a.abort(ctx, s, RefusedStalled, nil)
		}
	}
	var oldest time.Duration
	for _, s := range a.active {
		if !s.viewAt.IsZero() {
			oldest = max(oldest, now.Sub(s.viewAt))
		}
	}
	a.cfg.Stats.PinnedViewNanos.Store(int64(oldest))
	a.cfg.Stats.StreamsStalled.Store(int64(a.stalled))
	a.admit(ctx)
}
