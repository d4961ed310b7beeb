package actors_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport/adapter"
)

// holdRouter stands in for adapter.Router and answers nothing by itself:
// every Send goes to the test, which decides when (and how) it was sent.
type holdRouter struct{ sends chan *adapter.Send }

func (r *holdRouter) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(*adapter.Send); ok {
		r.sends <- m
	}
}

type holdRig struct {
	sys      *actor.ActorSystem
	snapshot *actor.PID
	router   *holdRouter
	st       *stats.Server
}

func newHoldRig(t *testing.T, cfg actors.SnapshotConfig) *holdRig {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	rig := &holdRig{sys: sys, router: &holdRouter{sends: make(chan *adapter.Send, 64)}, st: &stats.Server{}}
	store := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return actors.NewStore(actors.StoreConfig{Stats: rig.st}) }))
	// What the raft FSM hands the store once the entry is committed.
	sys.Root.Send(store, &raftlog.Batch{Entries: []raftlog.Applied{{Index: 1, Entry: raftlog.Entry{Kind: raftlog.KindOps, Ops: []raftlog.Op{
		{Kind: raftlog.OpSet, Msg: kvmsg.Msg{Key: []byte("/a/1"), Body: []byte("x")}},
		{Kind: raftlog.OpSet, Msg: kvmsg.Msg{Key: []byte("/a/2"), Body: []byte("y")}},
	}}}}})
	cfg.Router = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return rig.router }))
	cfg.Store, cfg.Stats, cfg.Log = store, rig.st, &stats.RejectLog{Stats: rig.st, Logger: quiet}
	rig.snapshot = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return actors.NewSnapshot(cfg) }))
	t.Cleanup(func() { sys.Root.Stop(rig.snapshot) })
	return rig
}

func (rig *holdRig) ask(peer, subtree string) {
	rig.sys.Root.Send(rig.snapshot, &adapter.Request{Peer: []byte(peer),
		Frames: [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(subtree)}, Count: 2})
}

// next returns the next Send the responder handed the router.
func (rig *holdRig) next(t *testing.T) *adapter.Send {
	t.Helper()
	select {
	case s := <-rig.router.sends:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no send to the router within 10s")
		return nil
	}
}

// last decodes the final message of a Send.
func last(t *testing.T, s *adapter.Send) kvmsg.Msg {
	t.Helper()
	m, err := kvmsg.Decode(s.Msgs.Message(s.Msgs.Len()-1), kvmsg.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wantRefusal checks that s is the refused KTHXBAI for peer and subtree.
func wantRefusal(t *testing.T, s *adapter.Send, peer, subtree, reason string) {
	t.Helper()
	m := last(t, s)
	r, _ := m.Prop(kvmsg.PropRefused)
	if string(s.Peer) != peer || s.Msgs.Len() != 1 || string(m.Key) != kvmsg.KeySnapshotEnd || m.Seq != 0 ||
		string(m.Body) != subtree || r != reason || s.Deadline.IsZero() != (reason == actors.RefusedStalled) {
		t.Fatalf("got %d messages to %q ending %q seq %d body %q refused=%q (deadline %v), want one refused KTHXBAI to %q for %q refused=%s",
			s.Msgs.Len(), s.Peer, m.Key, m.Seq, m.Body, r, s.Deadline, peer, subtree, reason)
	}
}

// TestSnapshotRefusals: a request that cannot be queued is answered at once
// with a KTHXBAI refused=busy; a peer over its own cap is answered
// refused=too_many_requests, but only after the KTHXBAI of the stream it
// has on the wire, so no refusal lands inside a snapshot.
func TestSnapshotRefusals(t *testing.T) {
	rig := newHoldRig(t, actors.SnapshotConfig{MaxStreams: 1, MaxWaiting: 2, MaxWaitingPerPeer: 1,
		Deadline: time.Hour, StallAfter: time.Hour})
	rig.ask("A", "/a/")
	a := rig.next(t)
	if string(a.Peer) != "A" || a.Msgs.Len() != 3 || string(last(t, a).Key) != kvmsg.KeySnapshotEnd {
		t.Fatalf("A's stream: %d messages to %q, want 2 KVSYNCs and KTHXBAI", a.Msgs.Len(), a.Peer)
	}
	rig.ask("B", "/a/") // waits (the one slot is A's)
	rig.ask("A", "/a/") // waits behind A's stream
	rig.ask("C", "/c/") // the queue is full
	wantRefusal(t, rig.next(t), "C", "/c/", actors.RefusedBusy)
	rig.ask("A", "/x/") // A has one waiting already: refused, after A's stream
	testkit.WaitFor(t, 10*time.Second, time.Millisecond, "too_many_requests counted", func() bool { return rig.st.SnapshotRefusals.Get(actors.RefusedTooMany) == 1 })
	select {
	case s := <-rig.router.sends:
		t.Fatalf("send to %q while A's stream is on the wire", s.Peer)
	default:
	}
	rig.sys.Root.Send(a.ReplyTo, &adapter.Sent{Tag: a.Tag})
	wantRefusal(t, rig.next(t), "A", "/x/", actors.RefusedTooMany)
	if b := rig.next(t); string(b.Peer) != "B" || b.Msgs.Len() != 3 {
		t.Fatalf("after A's stream: %d messages to %q, want B's stream", b.Msgs.Len(), b.Peer)
	}
	if n := rig.st.SnapshotRefusals.Get(actors.RefusedBusy); n != 1 {
		t.Errorf("busy refusals %d, want 1", n)
	}
}

// TestSnapshotStalledStream: a stream whose peer takes nothing stops
// holding its slot after StallAfter (the waiting request starts), and at
// the deadline is replaced by a refused=stalled KTHXBAI; once the router
// hands its chunks back, nothing of it is left.
func TestSnapshotStalledStream(t *testing.T) {
	rig := newHoldRig(t, actors.SnapshotConfig{MaxStreams: 1, ChunkSize: 1, InFlight: 1,
		Deadline: 300 * time.Millisecond, StallAfter: 50 * time.Millisecond})
	rig.ask("A", "/a/")
	a := rig.next(t)
	rig.ask("B", "/a/")
	b := rig.next(t)
	if string(a.Peer) != "A" || string(b.Peer) != "B" {
		t.Fatalf("sends to %q then %q, want A's stream then B's (started when A's stalled)", a.Peer, b.Peer)
	}
	rig.sys.Root.Send(b.ReplyTo, &adapter.Sent{Tag: b.Tag}) // B keeps going
	b2 := rig.next(t)
	if string(b2.Peer) != "B" {
		t.Fatalf("send to %q, want B's next chunk", b2.Peer)
	}
	r := rig.next(t) // A's deadline
	wantRefusal(t, r, "A", "/a/", actors.RefusedStalled)
	if !r.Replace {
		t.Fatal("the stalled refusal must replace what is queued for the peer")
	}
	rig.sys.Root.Send(a.ReplyTo, &adapter.Sent{Tag: a.Tag, Err: adapter.ErrCanceled})
	rig.sys.Root.Send(r.ReplyTo, &adapter.Sent{Tag: r.Tag})
	testkit.WaitFor(t, 10*time.Second, time.Millisecond, "A's stream gone", func() bool {
		return rig.st.SnapshotAborts.Get(actors.RefusedStalled) >= 1 && rig.st.StreamsInFlight.Load() <= 1
	})
	// B stalls too (the test stopped answering): same end.
	wantRefusal(t, rig.next(t), "B", "/a/", actors.RefusedStalled)
	if n := rig.st.SnapshotsAborted.Load(); n != 2 {
		t.Errorf("%d aborts, want 2", n)
	}
}
