package reliability

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// loader sends KVSETs from its own PUSH socket until stopped, never blocking
// (a dead server must not hang it): a send that would block is retried.
type loader struct {
	sent atomic.Int64
	stop chan struct{}
	done chan error
}

// startLoader sends the updates mk(i) for i = 0, 1, ...; rate > 0 paces it
// to rate a second, rate 0 sends as fast as the socket takes them.
func startLoader(zctx *zmq.Context, port, rate int, mk func(i int64) [][]byte) *loader {
	l := &loader{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		push, err := transport.Connect(zctx, zmq.PUSH, endpoint(port, 2), transport.Options{})
		if err != nil {
			l.done <- err
			return
		}
		defer push.Close()
		start := time.Now()
		for i := int64(0); ; {
			select {
			case <-l.stop:
				l.done <- nil
				return
			default:
			}
			due := int64(1 << 62)
			if rate > 0 {
				due = int64(time.Since(start).Seconds() * float64(rate))
			}
			for n := 0; i <= due && n < 256; n++ {
				if err := transport.SendMessage(push, mk(i), zmq.DONTWAIT); err != nil {
					if transport.IsAgain(err) {
						break
					}
					l.done <- err
					return
				}
				i++
				l.sent.Add(1)
			}
			if rate > 0 || i <= due {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	return l
}

func (l *loader) halt(t testing.TB) {
	t.Helper()
	close(l.stop)
	if err := <-l.done; err != nil {
		t.Errorf("loader: %v", err)
	}
}

// seqRecorder reads a SUB (subtree "") on its own goroutine and records
// every update's sequence.
type seqRecorder struct {
	mu   sync.Mutex
	seqs []int64
	stop chan struct{}
	done chan error
}

func startRecorder(t testing.TB, zctx *zmq.Context, port int) *seqRecorder {
	t.Helper()
	sub, err := transport.NewSocket(zctx, zmq.SUB, transport.Options{Subscribe: []string{""}})
	if err != nil {
		t.Fatal(err)
	}
	// Unlimited: the test must not lose what the server published.
	if err := sub.SetRcvhwm(0); err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(endpoint(port, 1)); err != nil {
		t.Fatal(err)
	}
	r := &seqRecorder{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		defer sub.Close()
		for {
			select {
			case <-r.stop:
				r.done <- nil
				return
			default:
			}
			frames, err := testkit.RecvWithin(sub, 20*time.Millisecond)
			if err != nil {
				continue
			}
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			if err != nil {
				r.done <- fmt.Errorf("undecodable KVPUB: %w", err)
				return
			}
			if string(m.Key) == kvmsg.KeyHeartbeat {
				continue
			}
			r.mu.Lock()
			r.seqs = append(r.seqs, m.Seq)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *seqRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

func (r *seqRecorder) halt() ([]int64, error) {
	close(r.stop)
	err := <-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seqs, err
}

// TestSIGTERMPublishesAccepted sends SIGTERM to a clonesrv process in the
// middle of a full-speed load and checks that every update it accepted
// (sequenced) before exiting was published and reached a subscriber, with
// no gap, and that it exits 0.
func TestSIGTERMPublishesAccepted(t *testing.T) {
	p := startClonesrv(t, "--pub-hwm", "10000000", "--pub-linger", "5s")
	zctx := newContext(t, 0)
	rec := startRecorder(t, zctx, p.port)
	probe := connect(t, zctx, zmq.PUSH, p.port, 2, transport.Options{})
	waitFor(t, 10*time.Second, "subscriber receives", func() bool {
		sendOrFail(t, probe, setMsg("/probe", []byte("p")))
		time.Sleep(20 * time.Millisecond)
		return rec.count() > 0
	})
	probe.Close()

	body := make([]byte, 64)
	var loaders []*loader
	for g := range 3 {
		loaders = append(loaders, startLoader(zctx, p.port, 0, func(i int64) [][]byte {
			return setMsg(fmt.Sprintf("/load/%d/%d", g, i%1000), body)
		}))
	}
	time.Sleep(time.Second)
	mid := rec.count()
	p.signal(t, syscall.SIGTERM)
	signalled := time.Now()
	state := p.wait(t, 30*time.Second)
	exitTook := time.Since(signalled)
	var sent int64
	for _, l := range loaders {
		l.halt(t)
		sent += l.sent.Load()
	}
	if !state.Success() {
		t.Errorf("clonesrv exited with %v after SIGTERM", state)
	}
	stopped, ok := p.logRecord("clonekv server stopped")
	if !ok {
		t.Fatalf("no \"clonekv server stopped\" log line:\n%s", p.logText())
	}
	seq, published := num(stopped, "sequence"), num(stopped, "published")
	// Whatever the subscriber still has queued arrives within a moment.
	deadline := time.Now().Add(10 * time.Second)
	for int64(rec.count()) < seq && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	seqs, err := rec.halt()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGTERM after 1s of load (%d updates seen before it); %v %v after the signal; loaders sent %d, server sequence %d, published %d, subscriber received %d",
		mid, state, exitTook.Round(time.Millisecond), sent, seq, published, len(seqs))
	if seq < int64(mid) || seq == 0 {
		t.Fatalf("server sequence %d, but %d updates were seen before the signal", seq, mid)
	}
	if published != seq {
		t.Errorf("server accepted %d updates but published %d", seq, published)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("subscriber's update %d has sequence %d: accepted updates lost or reordered", i+1, s)
		}
	}
	if int64(len(seqs)) != seq {
		t.Errorf("subscriber received %d updates, server accepted %d", len(seqs), seq)
	}
}

// TestKill9Restart kills a clonesrv process with SIGKILL under load and
// restarts it on the same ports, twice. clonekv clients (client/) and the
// raw replicas of this package notice (silence, or sequences that went
// backwards), re-join and converge on the new server's map.
func TestKill9Restart(t *testing.T) {
	replicas, clients, rate := 3, 3, 2000
	if raceEnabled {
		replicas, clients, rate = 2, 2, 500
	}
	p := startClonesrv(t, "--hugz", "100ms")
	port := p.port
	zctx := newContext(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rs []*replica
	var fs []follower
	for i := range replicas {
		rs = append(rs, startReplica(ctx, zctx, port, time.Second, 0))
		fs = append(fs, replicaFollower(i, rs[i]))
	}
	var cs []*client.Client
	for i := range clients {
		cs = append(cs, dialClient(t, port, time.Second))
		fs = append(fs, clientFollower(i, cs[i]))
	}
	var sent int64
	load := func() *loader {
		return startLoader(zctx, port, rate, func(i int64) [][]byte {
			key := fmt.Sprintf("/k/%03d", i%500)
			if i%7 == 0 {
				return setMsg(key, nil) // a delete
			}
			return setMsg(key, []byte(fmt.Sprint(i)))
		})
	}
	ld := load()
	waitFor(t, 20*time.Second, "replicas joined and following", func() bool {
		for _, r := range rs {
			if st, err := r.State(5 * time.Second); err != nil || st.Joins < 1 || st.Applied < 100 {
				return false
			}
		}
		return true
	})

	joins0 := make([]int, len(rs))
	for i, r := range rs {
		st, err := r.State(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		joins0[i] = st.Joins
	}
	// Two kills: one restart slower than the replicas' silence timeout
	// (they notice the silence), one at once (they notice the sequence
	// going back to 1).
	for round, down := range []time.Duration{1500 * time.Millisecond, 0} {
		time.Sleep(time.Second)
		p.signal(t, syscall.SIGKILL)
		p.wait(t, 10*time.Second)
		killedAt := time.Now()
		time.Sleep(down)
		np := startClonesrv(t, "--hugz", "100ms", "--port", fmt.Sprint(port))
		restarted := time.Since(killedAt)
		time.Sleep(time.Second)
		ld.halt(t)
		sent += ld.sent.Load()
		took := converge(t, zctx, port, fs, 30*time.Second, fmt.Sprintf("after restart %d", round+1))
		t.Logf("kill -9 #%d under %d updates/s; restarted after %v (pid %d -> %d); %d replicas and %d clients converged %v later",
			round+1, rate, restarted.Round(time.Millisecond), p.pid(), np.pid(), replicas, clients, took.Round(time.Millisecond))
		p = np
		ld = load()
	}
	ld.halt(t)
	for i, r := range rs {
		st, err := r.State(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("replica %d: %d joins (%d after silence, %d after a sequence reset, %d after a gap), %d live updates, %d keys at seq %d",
			i, st.Joins, st.Silent, st.Resets, st.Gaps, st.Applied, len(st.Map), st.Seq)
		if st.Joins < joins0[i]+2 {
			t.Errorf("replica %d joined %d times (%d before the kills), want a re-join after each of the two restarts", i, st.Joins, joins0[i])
		}
	}
	for i, c := range cs {
		st := c.Stats()
		t.Logf("client %d: %d joins (%d resyncs: %d restarts, %d timeouts, %d disconnects, %d gaps), %d updates, %d keys at seq %d",
			i, st.Joins, st.Resyncs, st.Restarts, st.Timeouts, st.Disconnects, st.Gaps, st.Updates, st.Keys, st.Seq)
		if st.Joins < 3 {
			t.Errorf("client %d joined %d times, want a re-join after each of the two restarts", i, st.Joins)
		}
	}
	t.Logf("%d updates sent", sent)
}

// converge waits until every follower holds exactly the server's map at
// the server's sequence, and returns how long that took.
func converge(t *testing.T, zctx *zmq.Context, port int, fs []follower, d time.Duration, when string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < d {
		m, seq := snapshotMap(t, zctx, port, "", 5*time.Second)
		want := stateOf(seq, m)
		ok := true
		for _, f := range fs {
			got, err := f.state()
			if err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
			if got != want {
				ok = false
				last = fmt.Sprintf("%s at seq %d with %d keys, server at %d with %d", f.name, got.Seq, got.Keys, want.Seq, want.Keys)
				break
			}
		}
		if ok {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: did not converge in %v: %s", when, d, last)
	return 0
}
