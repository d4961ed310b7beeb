package actors_test

import (
	"bytes"
	"fmt"
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

// TestSnapshotWaveSharedAndLaggard: peers that ask for the same subtree
// together get whole, identical snapshots at the view taken when they
// asked, while the map changes meanwhile; a peer that stops taking its
// chunks (more than a wave retains) still gets all of its snapshot once
// it reads again, and does not hold the others back.
func TestSnapshotWaveSharedAndLaggard(t *testing.T) {
	const keys = 100 // ChunkSize 1: far more chunks than a wave retains
	quiet := slog.New(slog.DiscardHandler)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	st := &stats.Server{}
	store := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return actors.NewStore(actors.StoreConfig{Stats: st}) }))
	batch := func(index uint64, val string) *raftlog.Batch {
		var ops []raftlog.Op
		for i := range keys {
			ops = append(ops, raftlog.Op{Kind: raftlog.OpSet, Msg: kvmsg.Msg{Key: fmt.Appendf(nil, "/w/%03d", i), Body: []byte(val)}})
		}
		return &raftlog.Batch{Entries: []raftlog.Applied{{Index: index, Entry: raftlog.Entry{Kind: raftlog.KindOps, Ops: ops}}}}
	}
	sys.Root.Send(store, batch(1, "old"))
	router := &holdRouter{sends: make(chan *adapter.Send, 1024)}
	cfg := actors.SnapshotConfig{ChunkSize: 1, InFlight: 2, MaxStreams: 8, Deadline: time.Hour, StallAfter: time.Hour,
		Router: sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return router })),
		Store:  store, Stats: st, Log: &stats.RejectLog{Stats: st, Logger: quiet}}
	snap := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return actors.NewSnapshot(cfg) }))
	t.Cleanup(func() { sys.Root.Stop(snap) })

	peers := []string{"A", "B", "C", "D"}
	for _, p := range peers {
		sys.Root.Send(snap, &adapter.Request{Peer: []byte(p), Frames: [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/w/")}, Count: 2})
	}
	got := map[string][]kvmsg.Msg{}
	var held []*adapter.Send // B's, unanswered until the others are done
	done := func(p string) bool {
		m := got[p]
		return len(m) > 0 && string(m[len(m)-1].Key) == kvmsg.KeySnapshotEnd
	}
	take := func(s *adapter.Send) {
		for i := range s.Msgs.Len() {
			m, err := kvmsg.Decode(s.Msgs.Message(i), kvmsg.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got[string(s.Peer)] = append(got[string(s.Peer)], kvmsg.Msg{Key: bytes.Clone(m.Key), Seq: m.Seq, Body: bytes.Clone(m.Body)})
		}
		sys.Root.Send(s.ReplyTo, &adapter.Sent{Tag: s.Tag})
	}
	changed := false
	deadline := time.After(20 * time.Second)
	for !done("A") || !done("B") || !done("C") || !done("D") {
		var s *adapter.Send
		select {
		case s = <-router.sends:
		case <-deadline:
			t.Fatalf("snapshots incomplete after 20s: A %d, B %d (%d held), C %d, D %d messages",
				len(got["A"]), len(got["B"]), len(held), len(got["C"]), len(got["D"]))
		}
		if !changed {
			sys.Root.Send(store, batch(2, "new")) // after the view: not in any of these snapshots
			changed = true
		}
		if string(s.Peer) == "B" && !(done("A") && done("C") && done("D")) {
			held = append(held, s)
			continue
		}
		take(s)
		if done("A") && done("C") && done("D") {
			for _, h := range held {
				take(h)
			}
			held = nil
		}
	}
	for _, p := range peers {
		m := got[p]
		if len(m) != keys+1 {
			t.Fatalf("%s got %d messages, want %d KVSYNCs and KTHXBAI", p, len(m), keys)
		}
		for i, kv := range m[:keys] {
			if want := fmt.Sprintf("/w/%03d", i); string(kv.Key) != want || string(kv.Body) != "old" {
				t.Fatalf("%s message %d: %s=%q, want %s=\"old\"", p, i, kv.Key, kv.Body, want)
			}
		}
		if end := m[keys]; end.Seq != m[0].Seq+keys-1 || string(end.Body) != "/w/" {
			t.Fatalf("%s KTHXBAI seq %d body %q, want seq %d (the view's) and the subtree", p, end.Seq, end.Body, m[0].Seq+keys-1)
		}
	}
	testkit.WaitFor(t, 10*time.Second, time.Millisecond, "every snapshot counted served", func() bool {
		return st.SnapshotsServed.Load() == int64(len(peers)) && st.StreamsInFlight.Load() == 0
	})
}
