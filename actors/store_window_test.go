package actors_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/window"
)

// viewCatcher forwards the store's *View to the test.
type viewCatcher struct{ views chan *actors.View }

func (c *viewCatcher) Receive(ctx actor.Context) {
	if v, ok := ctx.Message().(*actors.View); ok {
		c.views <- v
	}
}

// The store feeds the window with every update it numbers (expiries
// included), takes it with each view, and on a snapshot restore (a restart,
// or a follower installing the leader's snapshot) adopts the snapshot's
// window, or starts an empty one at the restored sequence.
func TestStoreWindow(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	st := &stats.Server{}
	store := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return actors.NewStore(actors.StoreConfig{Stats: st, Window: 1 << 20}) }))
	catcher := &viewCatcher{views: make(chan *actors.View, 1)}
	me := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return catcher }))
	t.Cleanup(func() { sys.Root.Stop(store); sys.Root.Stop(me) })
	view := func() *actors.View {
		t.Helper()
		sys.Root.Send(store, &actors.ViewRequest{ReplyTo: me})
		select {
		case v := <-catcher.views:
			return v
		case <-time.After(10 * time.Second):
			t.Fatal("no view")
			return nil
		}
	}
	sys.Root.Send(store, &raftlog.Batch{Entries: []raftlog.Applied{{Index: 1, Entry: raftlog.Entry{Kind: raftlog.KindOps, Ops: []raftlog.Op{
		{Kind: raftlog.OpSet, Msg: kvmsg.Msg{Key: []byte("/a"), Body: []byte("x")}},
		{Kind: raftlog.OpSet, Msg: kvmsg.Msg{Key: []byte("/b"), Body: []byte("y")}, Expires: time.Now().Add(time.Hour).UnixNano()},
	}}}, {Index: 2, Entry: raftlog.Entry{Kind: raftlog.KindOps, Ops: []raftlog.Op{
		{Kind: raftlog.OpExpire, Msg: kvmsg.Msg{Key: []byte("/b")}, Seq: 2},
		{Kind: raftlog.OpExpire, Msg: kvmsg.Msg{Key: []byte("/a")}, Seq: 99}, // overwritten since: no sequence
	}}}}})
	v := view()
	if v.Seq != 3 || v.Window == nil || v.Window.Base() != 0 || v.Window.Seq() != 3 {
		t.Fatalf("view at %d, window %+v", v.Seq, v.Window)
	}
	var got []string
	c := v.Window.Cursor(0, nil)
	for r, ok := c.Next(); ok; r, ok = c.Next() {
		got = append(got, string(r.Key)+"="+string(r.Body))
	}
	if len(got) != 3 || got[0] != "/a=x" || got[1] != "/b=y" || got[2] != "/b=" {
		t.Fatalf("window %q, want the two sets and the expiry", got)
	}
	if st.ResumeWindowSequences.Load() != 3 || st.ResumeWindowBytes.Load() != 8+3*window.EntryBytes {
		t.Fatalf("window stats: %d sequences, %d bytes", st.ResumeWindowSequences.Load(), st.ResumeWindowBytes.Load())
	}

	// A snapshot with a window: adopted as it is.
	w := window.New(0, 40)
	for s := int64(41); s <= 50; s++ {
		if err := w.Append(kvmsg.Msg{Key: []byte("/r"), Seq: s, Body: []byte("v")}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	restore := func(r raftlog.Restored) {
		t.Helper()
		done := make(chan error, 1)
		sys.Root.Send(store, &actors.RestoreRequest{State: r, Reply: done})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	restore(raftlog.Restored{Seq: 50, History: "h", Map: kvmap.New(), Window: w})
	if v := view(); v.Window.Base() != 40 || v.Window.Seq() != 50 || !v.Window.Covers(40) {
		t.Fatalf("after a restore with a window: (%d, %d]", v.Window.Base(), v.Window.Seq())
	}
	// A version 1 snapshot (no window): an empty window at its sequence,
	// which the updates after it fill.
	restore(raftlog.Restored{Seq: 70, History: "h", Map: kvmap.New()})
	sys.Root.Send(store, &raftlog.Batch{Entries: []raftlog.Applied{{Index: 9, Entry: raftlog.Entry{Kind: raftlog.KindOps, Ops: []raftlog.Op{
		{Kind: raftlog.OpSet, Msg: kvmsg.Msg{Key: []byte("/c"), Body: []byte("z")}},
	}}}}})
	if v := view(); v.Window.Base() != 70 || v.Window.Seq() != 71 || v.Window.Covers(69) {
		t.Fatalf("after a restore without a window and one update: (%d, %d]", v.Window.Base(), v.Window.Seq())
	}
}
