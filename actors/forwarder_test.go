package actors_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
)

// fwdRig is a forwarder on a real ZeroMQ context, with "leader
// collectors" bound on 127.0.0.1 (each read by the test goroutine only)
// and an actor standing for the proposer that gets back what the
// forwarder returns.
type fwdRig struct {
	t        *testing.T
	sys      *actor.ActorSystem
	zctx     *zmq.Context
	st       *stats.Server
	pid      *actor.PID
	returned chan *actors.Updates
	credits  atomic.Int64 // credits given out and not yet returned
}

func newFwdRig(t *testing.T, cfg actors.ForwarderConfig) *fwdRig {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	r := &fwdRig{t: t, zctx: zctx, st: &stats.Server{}, returned: make(chan *actors.Updates, 100)}
	r.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	ret := r.sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if u, ok := c.Message().(*actors.Updates); ok {
			r.returned <- u
		}
	}))
	cfg.Context, cfg.Stats, cfg.Return = zctx, r.st, ret
	r.pid = r.sys.Root.Spawn(actors.NewForwarder(cfg).Props())
	t.Cleanup(func() {
		r.stop()
		r.sys.Shutdown()
		zctx.Term()
	})
	return r
}

func (r *fwdRig) stop() {
	if r.pid != nil {
		if err := r.sys.Root.StopFuture(r.pid).Wait(); err != nil {
			r.t.Errorf("stop the forwarder: %v", err)
		}
		r.pid = nil
	}
}

// collector binds a leader's collector (PULL or SUB) on 127.0.0.1.
func (r *fwdRig) collector(typ zmq.Type) (*zmq.Socket, string) {
	r.t.Helper()
	opts := transport.Options{}
	if typ == zmq.SUB {
		opts.Subscribe = []string{""}
	}
	s, err := transport.Bind(r.zctx, typ, "tcp://127.0.0.1:*", opts)
	if err != nil {
		r.t.Fatal(err)
	}
	ep, err := s.GetLastEndpoint()
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.Close() })
	return s, ep
}

// send forwards n updates named prefix-i (i from first), hop count hops
// (as the proposer sets it), as one batch holding one credit.
func (r *fwdRig) send(prefix string, first, n, hops int) {
	items := make([]actors.Pending, n)
	for i := range items {
		k := first + i
		items[i] = actors.Pending{Msg: kvmsg.Msg{
			Key:   fmt.Appendf(nil, "/%s/%d", prefix, k),
			Seq:   actors.ForwardSeq(hops),
			UUID:  bytes.Repeat([]byte{byte(k)}, kvmsg.UUIDLen),
			Props: []byte("ttl=30\nowner=test\n"),
			Body:  fmt.Appendf(nil, "value-%d", k),
		}}
	}
	r.credits.Add(1)
	var once atomic.Bool
	r.sys.Root.Send(r.pid, &actors.Forward{Items: items, Done: func() {
		if !once.CompareAndSwap(false, true) {
			r.t.Errorf("batch %s/%d: credit returned twice", prefix, first)
		}
		r.credits.Add(-1)
	}})
}

func (r *fwdRig) lead(l actors.Leadership) { r.sys.Root.Send(r.pid, &l) }

// recv reads messages from s until want keys arrived (each checked
// frame by frame), failing after d.
func (r *fwdRig) recv(s *zmq.Socket, got map[string]int, want int, d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for len(got) < want {
		frames, err := testkit.RecvWithin(s, time.Until(deadline))
		if err != nil {
			r.t.Fatalf("%d of %d forwarded updates arrived: %v", len(got), want, err)
		}
		checkForwarded(r.t, frames)
		got[string(frames[0])]++
	}
}

// checkForwarded checks that a forwarded message is a Clone KVSET whose
// frames are the client's, its sequence frame carrying the hop count.
func checkForwarded(t *testing.T, frames [][]byte) {
	t.Helper()
	msg, err := kvmsg.Decode(frames, kvmsg.DefaultLimits)
	if err != nil {
		t.Fatalf("forwarded message does not decode: %v", err)
	}
	var k int
	var prefix string
	if _, err := fmt.Sscanf(string(msg.Key), "/%1s/%d", &prefix, &k); err != nil {
		t.Fatalf("key %q: %v", msg.Key, err)
	}
	if !bytes.Equal(msg.UUID, bytes.Repeat([]byte{byte(k)}, kvmsg.UUIDLen)) || string(msg.Props) != "ttl=30\nowner=test\n" ||
		string(msg.Body) != fmt.Sprintf("value-%d", k) {
		t.Fatalf("forwarded %q changed: uuid %x props %q body %q", msg.Key, msg.UUID, msg.Props, msg.Body)
	}
	if h := actors.ForwardHops(msg.Seq); h != 1 {
		t.Fatalf("forwarded %q carries hop count %d (seq %#x), want 1", msg.Key, h, msg.Seq)
	}
}

func (r *fwdRig) waitCredits() {
	r.t.Helper()
	testkit.WaitFor(r.t, 20*time.Second, time.Millisecond, "every credit returned", func() bool { return r.credits.Load() == 0 })
}

// TestForwarderToPullLeader: updates reach a PULL leader collector with
// every frame as the client sent it; each batch's credit comes back once
// it is handed to the socket; a change of leader mid-stream moves the
// rest to the new leader, and every update arrives once.
func TestForwarderToPullLeader(t *testing.T) {
	r := newFwdRig(t, actors.ForwarderConfig{})
	a, epA := r.collector(zmq.PULL)
	b, epB := r.collector(zmq.PULL)
	r.lead(actors.Leadership{Leader: "a", Collector: epA, Term: 2})
	got := map[string]int{}
	for i := 0; i < 10; i++ {
		r.send("a", i*10, 10, 1)
	}
	r.recv(a, got, 100, 20*time.Second)
	r.waitCredits()

	// Mid-stream: batches sent before the change go to A (or, once A is
	// left, to B: a PUSH closing with its linger delivers what it held).
	for i := 0; i < 10; i++ {
		r.send("b", i*10, 10, 1)
		if i == 4 {
			r.lead(actors.Leadership{Leader: "b", Collector: epB, Term: 3})
		}
	}
	gotB := map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for len(gotB) < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("after the change of leader %d of 100 updates arrived", len(gotB))
		}
		for _, s := range []*zmq.Socket{a, b} {
			if frames, err := testkit.RecvWithin(s, 5*time.Millisecond); err == nil {
				checkForwarded(t, frames)
				gotB[string(frames[0])]++
			}
		}
	}
	for k, n := range gotB {
		if n != 1 {
			t.Errorf("%s arrived %d times", k, n)
		}
	}
	r.waitCredits()
	if n := r.st.UpdatesForwarded.Load(); n != 200 {
		t.Errorf("forwarded counter %d, want 200", n)
	}
	// B got at least the batches sent after the change.
	if r.st.ForwardQueued.Load() != 0 || r.st.ForwardQueuedBytes.Load() != 0 {
		t.Errorf("queue gauge %d/%d B after the flush", r.st.ForwardQueued.Load(), r.st.ForwardQueuedBytes.Load())
	}
}

// TestForwarderToSubLeader: with SUB collectors (--collector sub, Model
// Six clients) the forwarder publishes, and waits for the leader's
// subscription, so that even the first updates after connecting arrive.
func TestForwarderToSubLeader(t *testing.T) {
	r := newFwdRig(t, actors.ForwarderConfig{Sub: true})
	a, epA := r.collector(zmq.SUB)
	r.lead(actors.Leadership{Leader: "a", Collector: epA, Term: 1})
	r.send("s", 0, 50, 1) // right after connecting: before the subscription reached us
	got := map[string]int{}
	r.recv(a, got, 50, 20*time.Second)
	b, epB := r.collector(zmq.SUB)
	r.lead(actors.Leadership{Leader: "b", Collector: epB, Term: 2})
	r.send("t", 0, 50, 1)
	gotB := map[string]int{}
	r.recv(b, gotB, 50, 20*time.Second)
	r.waitCredits()
	if n := r.st.UpdatesForwarded.Load(); n != 100 {
		t.Errorf("forwarded counter %d, want 100", n)
	}
}

// TestForwarderSubLeaderNotYetUp: a SUB leader collector that binds only
// after the forwarder connected (a node restarting) still gets every
// update: the XPUB holds them until the subscription arrives.
func TestForwarderSubLeaderNotYetUp(t *testing.T) {
	r := newFwdRig(t, actors.ForwarderConfig{Sub: true})
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", testkit.FreePorts(t))
	r.lead(actors.Leadership{Leader: "late", Collector: ep, Term: 1})
	r.send("l", 0, 30, 1)
	testkit.WaitFor(t, 10*time.Second, time.Millisecond, "queued", func() bool { return r.st.ForwardQueued.Load() == 30 })
	if r.st.UpdatesForwarded.Load() != 0 {
		t.Fatal("forwarded before the leader's SUB subscribed")
	}
	sub, err := transport.Bind(r.zctx, zmq.SUB, ep, transport.Options{Subscribe: []string{""}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	got := map[string]int{}
	r.recv(sub, got, 30, 20*time.Second)
	r.waitCredits()
}

// TestForwarderNoLeaderQueue: while no leader is known the forwarder
// queues, up to its bound (the excess dropped, counted, its credit back
// at once); the next leader gets the queue; credits of the queued batches
// come back only once they are sent.
func TestForwarderNoLeaderQueue(t *testing.T) {
	r := newFwdRig(t, actors.ForwarderConfig{MaxQueue: 25})
	a, epA := r.collector(zmq.PULL)
	r.lead(actors.Leadership{Term: 4}) // an election: no leader
	for i := 0; i < 4; i++ {
		r.send("q", i*10, 10, 1)
	}
	testkit.WaitFor(t, 10*time.Second, time.Millisecond, "the queue full", func() bool {
		return r.st.ForwardDropped.Get(actors.DropQueueFull) == 15
	})
	if q := r.st.ForwardQueued.Load(); q != 25 {
		t.Errorf("queue gauge %d, want 25", q)
	}
	if c := r.credits.Load(); c != 3 {
		t.Errorf("%d credits held while queued, want 3 (the fourth batch was dropped whole)", c)
	}
	r.lead(actors.Leadership{Leader: "a", Collector: epA, Term: 5})
	got := map[string]int{}
	r.recv(a, got, 25, 20*time.Second)
	r.waitCredits()
	for i := 0; i < 25; i++ {
		if got[fmt.Sprintf("/q/%d", i)] != 1 {
			t.Errorf("/q/%d arrived %d times", i, got[fmt.Sprintf("/q/%d", i)])
		}
	}
}

// TestForwarderGivesBackWhenLeading: what was queued when this node wins
// the election goes back to the proposer, with its credits.
func TestForwarderGivesBackWhenLeading(t *testing.T) {
	r := newFwdRig(t, actors.ForwarderConfig{})
	r.lead(actors.Leadership{Term: 7})
	r.send("g", 0, 5, 1)
	r.send("g", 5, 5, 1)
	testkit.WaitFor(t, 10*time.Second, time.Millisecond, "queued", func() bool { return r.st.ForwardQueued.Load() == 10 })
	r.lead(actors.Leadership{Self: true, Leader: "me", Term: 8})
	n := 0
	for n < 10 {
		select {
		case u := <-r.returned:
			n += len(u.Items)
			u.Done()
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of 10 updates given back", n)
		}
	}
	r.waitCredits()
}

// TestForwarderStopReleasesCredits: stopping with a queue (no leader)
// drops and counts it and returns every credit.
func TestForwarderStopReleasesCredits(t *testing.T) {
	r := newFwdRig(t, actors.ForwarderConfig{})
	r.lead(actors.Leadership{Term: 1})
	r.send("x", 0, 7, 1)
	testkit.WaitFor(t, 10*time.Second, time.Millisecond, "queued", func() bool { return r.st.ForwardQueued.Load() == 7 })
	r.stop()
	r.waitCredits()
	if n := r.st.ForwardDropped.Get(actors.DropStopped); n != 7 {
		t.Errorf("dropped at stop %d, want 7", n)
	}
}

func TestForwardHops(t *testing.T) {
	for _, seq := range []int64{0, 1, 42, -1, 1 << 40} {
		if h := actors.ForwardHops(seq); h != 0 {
			t.Errorf("client sequence %d read as %d hops", seq, h)
		}
	}
	for h := 1; h <= actors.MaxForwardHops; h++ {
		if got := actors.ForwardHops(actors.ForwardSeq(h)); got != h {
			t.Errorf("hops %d read back as %d", h, got)
		}
	}
}
