package actors

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmsg"
)

// stepHandler records every batch; while hold is set, each OnCommit waits
// for a value on step first. It panics on batches whose first key is
// "boom", and overwrites every byte it is given.
type stepHandler struct {
	step    chan struct{}
	hold    bool
	mu      sync.Mutex
	batches []Batch
	closed  int
}

func (h *stepHandler) OnCommit(b Batch) {
	if h.hold {
		<-h.step
	}
	if string(b.Updates[0].Msg.Key) == "boom" {
		panic("boom")
	}
	h.mu.Lock()
	kept := Batch{Updates: copyUpdates(b.Updates), Dropped: b.Dropped}
	h.batches = append(h.batches, kept)
	h.mu.Unlock()
	for i := range b.Updates {
		for _, f := range [][]byte{b.Updates[i].Msg.Key, b.Updates[i].Msg.Body} {
			for j := range f {
				f[j] = 'X'
			}
		}
	}
}

func (h *stepHandler) Close() error {
	h.mu.Lock()
	h.closed++
	h.mu.Unlock()
	return nil
}

func (h *stepHandler) seen() ([]Batch, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Batch(nil), h.batches...), h.closed
}

func batch(key string, seqs ...int64) *Committed {
	c := &Committed{}
	for _, s := range seqs {
		c.Updates = append(c.Updates, Update{Msg: kvmsg.Msg{Key: []byte(key), Seq: s, Body: fmt.Appendf(nil, "v%d", s)}})
	}
	return c
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func quietSystem(t *testing.T) *actor.ActorSystem {
	t.Helper()
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
}

// TestHandlerRunnerDropsAndTells: with its queue full, the runner drops
// batches for the handler (never blocking the sender), counts them, and
// tells the handler how many it missed with the next batch it gets. The
// handler's copy is its own: overwriting it leaves the store's batch as it
// was. Stopping drains the queue, then closes the handler once.
func TestHandlerRunnerDropsAndTells(t *testing.T) {
	sys := quietSystem(t)
	h := &stepHandler{step: make(chan struct{}), hold: true}
	r := NewHandlerRunner(HandlerConfig{Name: "step", Handler: h, Queue: 2, Logger: slog.New(slog.DiscardHandler)})
	pid := sys.Root.Spawn(r.Props())

	first := batch("k", 1, 2)
	sys.Root.Send(pid, first)
	waitUntil(t, "the handler busy with the first batch", func() bool { return r.Status().Busy > 0 })
	for seq := int64(3); seq <= 10; seq++ { // 2 fit in the queue, 6 are dropped
		sys.Root.Send(pid, batch("k", seq))
	}
	waitUntil(t, "the drops counted", func() bool { return r.Status().Dropped == 6 })
	if st := r.Status(); st.Queued != 2 || st.Lag != 10 || st.Handled != 0 {
		t.Fatalf("status %+v, want 2 queued, lag 10, nothing handled", st)
	}
	for range 3 {
		h.step <- struct{}{}
	}
	sys.Root.Send(pid, batch("k", 11))
	h.step <- struct{}{}
	waitUntil(t, "4 batches handled", func() bool { b, _ := h.seen(); return len(b) == 4 })
	got, _ := h.seen()
	for i, want := range []struct {
		first   int64
		dropped int64
	}{{1, 0}, {3, 0}, {4, 0}, {11, 6}} {
		if got[i].Updates[0].Msg.Seq != want.first || got[i].Dropped != want.dropped {
			t.Errorf("batch %d starts at %d with %d dropped, want %d with %d", i, got[i].Updates[0].Msg.Seq, got[i].Dropped, want.first, want.dropped)
		}
	}
	if string(first.Updates[0].Msg.Key) != "k" || string(first.Updates[1].Msg.Body) != "v2" {
		t.Errorf("the handler's writes reached the store's batch: %q %q", first.Updates[0].Msg.Key, first.Updates[1].Msg.Body)
	}
	if st := r.Status(); st.Lag != 0 || st.Handled != 5 || st.Dropped != 6 {
		t.Errorf("status %+v, want lag 0, 5 handled, 6 dropped", st)
	}

	h.hold = false // the goroutine is idle: no OnCommit runs now
	sys.Root.Send(pid, batch("k", 12))
	if err := sys.Root.PoisonFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("runner not done after its actor stopped")
	}
	got, closed := h.seen()
	if len(got) != 5 || closed != 1 {
		t.Errorf("after stop: %d batches, closed %d times; want 5 and 1", len(got), closed)
	}
}

// TestHandlerRunnerRecoversPanics: a panic is counted and the next batch
// is delivered as usual.
func TestHandlerRunnerRecoversPanics(t *testing.T) {
	sys := quietSystem(t)
	h := &stepHandler{}
	r := NewHandlerRunner(HandlerConfig{Name: "boom", Handler: h, Logger: slog.New(slog.DiscardHandler)})
	pid := sys.Root.Spawn(r.Props())
	sys.Root.Send(pid, batch("boom", 1))
	sys.Root.Send(pid, batch("ok", 2))
	waitUntil(t, "both handled", func() bool { return r.Status().Handled == 2 })
	got, _ := h.seen()
	if st := r.Status(); st.Panics != 1 || len(got) != 1 || !bytes.Equal(got[0].Updates[0].Msg.Key, []byte("ok")) {
		t.Errorf("status %+v, batches %v: want 1 panic and the next batch delivered", st, got)
	}
	sys.Root.PoisonFuture(pid).Wait()
	<-r.Done()
}

// TestHandlerRunnerAbandonAndRelease: Abandon drops what is queued once
// the call in progress returns, then closes the handler; Release closes
// the handler of a runner never spawned.
func TestHandlerRunnerAbandonAndRelease(t *testing.T) {
	sys := quietSystem(t)
	h := &stepHandler{step: make(chan struct{}), hold: true}
	r := NewHandlerRunner(HandlerConfig{Name: "slow", Handler: h, Logger: slog.New(slog.DiscardHandler)})
	pid := sys.Root.Spawn(r.Props())
	sys.Root.Send(pid, batch("k", 1))
	waitUntil(t, "busy", func() bool { return r.Status().Busy > 0 })
	sys.Root.Send(pid, batch("k", 2, 3))
	waitUntil(t, "queued", func() bool { return r.Status().Queued == 1 })
	r.Abandon()
	h.step <- struct{}{}
	select {
	case <-r.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("abandoned runner not done")
	}
	got, closed := h.seen()
	if st := r.Status(); len(got) != 1 || closed != 1 || st.Dropped != 2 {
		t.Errorf("abandoned: %d batches, closed %d, status %+v; want 1, 1, 2 dropped", len(got), closed, st)
	}
	sys.Root.PoisonFuture(pid).Wait()

	never := &stepHandler{}
	nr := NewHandlerRunner(HandlerConfig{Name: "never", Handler: never})
	nr.Release()
	<-nr.Done()
	if _, closed := never.seen(); closed != 1 {
		t.Errorf("released runner closed its handler %d times, want 1", closed)
	}
}

// BenchmarkCopyUpdates measures the copy each handler gets of a batch of
// 64 updates (16-byte keys, 64-byte bodies, a UUID and a property): the
// price of "handlers cannot change what subscribers receive".
//
//	go test -run '^$' -bench CopyUpdates -count 5 ./actors/
func BenchmarkCopyUpdates(b *testing.B) {
	ups := make([]Update, 64)
	for i := range ups {
		ups[i] = Update{Msg: kvmsg.Msg{Key: fmt.Appendf(nil, "/bench/key/%05d", i), Seq: int64(i + 1),
			UUID: bytes.Repeat([]byte{1}, kvmsg.UUIDLen), Props: []byte("ttl=30\n"), Body: bytes.Repeat([]byte{'v'}, 64)}}
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = copyUpdates(ups)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/64, "ns/update")
}
