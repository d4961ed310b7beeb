package reliability

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// manySizes: concurrent clients, updates each must receive, connect /
// disconnect cycles.
func manySizes() (clients, updates, cycles int) {
	if raceEnabled {
		return 300, 50, 1500
	}
	return 2000, 50, 10000
}

// raiseNoFile raises the soft open-file limit to at least need, or skips
// the test when the hard limit does not allow it.
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		t.Skipf("needs %d open files, hard limit is %d (raise it with ulimit -Hn)", need, lim.Max)
	}
	lim.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("setrlimit %d: %v", need, err)
	}
}

// TestManyClients joins thousands of concurrent clients (SUB + DEALER
// each), checks every one receives every later update in order, then runs
// thousands of connect/disconnect cycles (some leaving mid-snapshot) and
// checks that no file descriptor or goroutine is left behind, neither while
// the server runs nor after it stops.
func TestManyClients(t *testing.T) {
	n, updates, cycles := manySizes()
	// Per client: 2 sockets (an eventfd each), 2 TCP connections on each
	// side.
	raiseNoFile(t, uint64(6*n+1024))
	runtime.GC()
	fd0, g0 := fdCount(t, 0), runtime.NumGoroutine()

	srv := startServer(t, server.Config{})
	port := srv.Port()
	zctx := newContext(t, 2*n+64)
	push := connect(t, zctx, zmq.PUSH, port, 2, transport.Options{})
	defer push.Close()
	for i := range 10 {
		sendOrFail(t, push, setMsg(fmt.Sprintf("/many/seed%d", i), []byte("s")))
	}

	// Join: workers own their clients' sockets.
	const workers = 8
	var joined, probed atomic.Int64
	startUpdates := make(chan struct{})
	results := make(chan workerResult, workers)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	joinStart := time.Now()
	for w := range workers {
		k := n / workers
		if w < n%workers {
			k++
		}
		go func() { results <- runClients(ctx, zctx, port, k, updates, &probed, &joined, startUpdates) }()
	}
	// Subscriptions reach the PUB asynchronously: probe until every SUB has
	// received one, so that nothing published after the joins can be missed.
	for probed.Load() < int64(n) {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d subscribers ever received a probe", probed.Load(), n)
		}
		sendOrFail(t, push, setMsg("/many/probe", []byte("p")))
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, 90*time.Second, "every client joined", func() bool { return joined.Load() == int64(n) })
	joinTook := time.Since(joinStart)
	fdJoined := fdCount(t, 0)
	close(startUpdates)
	sendStart := time.Now()
	for i := range updates {
		sendOrFail(t, push, setMsg("/many/k"+strconv.Itoa(i%10), stampBody(int64(i), 0)))
		time.Sleep(20 * time.Millisecond) // a modest 50 updates/s
	}
	var all latencies
	var failed int
	for range workers {
		r := <-results
		if r.err != nil {
			failed++
			t.Error(r.err)
		}
		all = append(all, r.lat...)
	}
	t.Logf("%d clients joined in %v (fds in use %d); %d updates at 50/s, each received by every client: fan-out latency %v; all done %v after the first update",
		n, joinTook.Round(time.Millisecond), fdJoined, updates, all, time.Since(sendStart).Round(time.Millisecond))
	if failed > 0 {
		t.FailNow()
	}
	st := srv.Stats()
	waitFor(t, 10*time.Second, "no snapshot streams left", func() bool { return st.StreamsInFlight.Load() == 0 })
	if got := st.SnapshotsServed.Load(); got != int64(n) {
		t.Errorf("server served %d snapshots, want %d", got, n)
	}

	// Connect/disconnect cycles, against a baseline taken with the server
	// running and no clients.
	for i := range 500 {
		sendOrFail(t, push, setMsg(fmt.Sprintf("/cycle/%03d", i), []byte("c")))
	}
	fdBase, gBase := settle(t, -1, -1)
	cyc := runCycles(t, zctx, port, cycles)
	fdAfter, gAfter := settle(t, fdBase, gBase)
	t.Logf("%d connect/disconnect cycles in %v (%d waited for the whole snapshot, %d left mid-stream, %d left at once); server running: fds %d -> %d, goroutines %d -> %d; snapshots aborted %d",
		cycles, cyc.took.Round(time.Millisecond), cyc.full, cyc.partial, cyc.none, fdBase, fdAfter, gBase, gAfter, st.SnapshotsAborted.Load())
	if fdAfter > fdBase+8 || gAfter > gBase+4 {
		t.Errorf("leak with the server running: fds %d -> %d, goroutines %d -> %d", fdBase, fdAfter, gBase, gAfter)
	}
	waitFor(t, 10*time.Second, "no snapshot streams left after cycles", func() bool { return st.StreamsInFlight.Load() == 0 })

	push.Close()
	srv.stop(t)
	zctx.Term()
	fdEnd, gEnd := settle(t, fd0, g0)
	t.Logf("after stop: fds %d -> %d, goroutines %d -> %d", fd0, fdEnd, g0, gEnd)
	if fdEnd > fd0+2 || gEnd > g0+2 {
		t.Errorf("leak after the server stopped: fds %d -> %d, goroutines %d -> %d", fd0, fdEnd, g0, gEnd)
	}
}

// settle waits up to 10s for the fd and goroutine counts to come down to
// the wanted ones (negative: wait 500ms and take what is there) and
// returns them.
func settle(t *testing.T, fdWant, gWant int) (fds, gs int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	if fdWant < 0 {
		deadline = time.Now().Add(500 * time.Millisecond)
	}
	for {
		runtime.GC()
		fds, gs = fdCount(t, 0), runtime.NumGoroutine()
		if (fdWant >= 0 && fds <= fdWant && gs <= gWant) || time.Now().After(deadline) {
			return fds, gs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sendOrFail(t testing.TB, s *zmq.Socket, frames [][]byte) {
	t.Helper()
	if err := transport.SendMessage(s, frames, 0); err != nil {
		t.Fatalf("send: %v", err)
	}
}

type workerResult struct {
	lat latencies
	err error
}

type manyClient struct {
	sub, dealer *zmq.Socket
	probed      bool
	joinSeq     int64
	joined      bool
	next        int64 // index of the next update expected
	lastSeq     int64
}

// runClients owns k clients: it connects them, reports when each SUB has
// seen a probe, joins them all (subtree /many/), then receives until every
// client has every one of the updates, in order, after its snapshot.
func runClients(ctx context.Context, zctx *zmq.Context, port, k, updates int, probed, joined *atomic.Int64, start <-chan struct{}) (res workerResult) {
	cs := make([]*manyClient, k)
	defer func() {
		for _, c := range cs {
			if c != nil {
				c.sub.Close()
				c.dealer.Close()
			}
		}
	}()
	subPoll, dealerPoll := zmq.NewPoller(), zmq.NewPoller()
	bySock := make(map[*zmq.Socket]*manyClient, 2*k)
	for i := range cs {
		sub, err := transport.Connect(zctx, zmq.SUB, endpoint(port, 1), transport.Options{Subscribe: []string{"/many/"}})
		if err != nil {
			return workerResult{err: err}
		}
		dealer, err := transport.Connect(zctx, zmq.DEALER, endpoint(port, 0), transport.Options{})
		if err != nil {
			sub.Close()
			return workerResult{err: err}
		}
		cs[i] = &manyClient{sub: sub, dealer: dealer}
		bySock[sub], bySock[dealer] = cs[i], cs[i]
		subPoll.Add(sub, zmq.POLLIN)
		dealerPoll.Add(dealer, zmq.POLLIN)
	}
	index := func(_ *zmq.Poller, s *zmq.Socket) *manyClient { return bySock[s] }
	// 1. Until every SUB has seen a probe.
	for left := k; left > 0; {
		if ctx.Err() != nil {
			return workerResult{err: fmt.Errorf("probe: %d subscribers never received", left)}
		}
		polled, err := subPoll.Poll(50 * time.Millisecond)
		if err != nil {
			return workerResult{err: err}
		}
		for _, p := range polled {
			c := index(subPoll, p.Socket)
			if _, _, err := transport.RecvMessage(c.sub, 0, nil); err != nil {
				return workerResult{err: err}
			}
			if !c.probed {
				c.probed = true
				left--
				probed.Add(1)
			}
		}
	}
	// 2. Join: one snapshot each.
	for _, c := range cs {
		if err := transport.SendMessage(c.dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/many/")}, 0); err != nil {
			return workerResult{err: err}
		}
	}
	for left := k; left > 0; {
		if ctx.Err() != nil {
			return workerResult{err: fmt.Errorf("join: %d clients never got their snapshot", left)}
		}
		polled, err := dealerPoll.Poll(50 * time.Millisecond)
		if err != nil {
			return workerResult{err: err}
		}
		for _, p := range polled {
			c := index(dealerPoll, p.Socket)
			frames, _, err := transport.RecvMessage(c.dealer, 0, nil)
			if err != nil {
				return workerResult{err: err}
			}
			if string(frames[0]) == kvmsg.KeySnapshotEnd {
				m, err := kvmsg.Decode(frames, kvmsg.Limits{})
				if err != nil {
					return workerResult{err: err}
				}
				c.joined, c.joinSeq, c.lastSeq = true, m.Seq, m.Seq
				left--
				joined.Add(1)
			}
		}
	}
	select {
	case <-start:
	case <-ctx.Done():
		return workerResult{err: ctx.Err()}
	}
	// 3. Every later update, in order.
	for left := k; left > 0; {
		if ctx.Err() != nil {
			return workerResult{lat: res.lat, err: fmt.Errorf("updates: %d clients still missing some", left)}
		}
		polled, err := subPoll.Poll(50 * time.Millisecond)
		if err != nil {
			return workerResult{err: err}
		}
		for _, p := range polled {
			c := index(subPoll, p.Socket)
			frames, _, err := transport.RecvMessage(c.sub, 0, nil)
			if err != nil {
				return workerResult{err: err}
			}
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			if err != nil || m.Seq <= c.joinSeq {
				continue // in the snapshot already (or probe leftovers)
			}
			if m.Seq <= c.lastSeq {
				return workerResult{err: fmt.Errorf("client got seq %d after %d", m.Seq, c.lastSeq)}
			}
			c.lastSeq = m.Seq
			idx, age, ok := readStamp(m.Body)
			if !ok {
				continue // a late probe
			}
			if idx != c.next {
				return workerResult{err: fmt.Errorf("client got update %d, want %d (lost or reordered)", idx, c.next)}
			}
			c.next++
			res.lat = append(res.lat, age)
			if c.next == int64(updates) {
				left--
			}
		}
	}
	return res
}

type cycleResult struct {
	full, partial, none int
	took                time.Duration
}

// runCycles connects and disconnects a SUB and a DEALER cycles times from 4
// goroutines; a third of the clients read their whole snapshot (500 keys),
// a third leave after a few messages, a third right after asking.
func runCycles(t *testing.T, zctx *zmq.Context, port, cycles int) cycleResult {
	t.Helper()
	var res cycleResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	start := time.Now()
	var next atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cycles {
					return
				}
				kind, err := oneCycle(zctx, port, i%3)
				if err != nil {
					errs <- fmt.Errorf("cycle %d: %w", i, err)
					return
				}
				mu.Lock()
				switch kind {
				case 0:
					res.full++
				case 1:
					res.partial++
				default:
					res.none++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	res.took = time.Since(start)
	return res
}

func oneCycle(zctx *zmq.Context, port, kind int) (int, error) {
	return oneCycleSubtree(zctx, port, kind, "/cycle/")
}

// oneCycleSubtree connects a SUB and a DEALER, asks for subtree's snapshot,
// reads all of it (kind 0), five messages (1) or none (2), and closes both.
func oneCycleSubtree(zctx *zmq.Context, port, kind int, subtree string) (int, error) {
	sub, err := transport.Connect(zctx, zmq.SUB, endpoint(port, 1), transport.Options{Subscribe: []string{subtree}})
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	dealer, err := transport.Connect(zctx, zmq.DEALER, endpoint(port, 0), transport.Options{RcvHWM: 10})
	if err != nil {
		return 0, err
	}
	defer dealer.Close()
	if err := transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(subtree)}, 0); err != nil {
		return 0, err
	}
	switch kind {
	case 0:
		for {
			frames, err := testkit.RecvWithin(dealer, 10*time.Second)
			if err != nil {
				return 0, fmt.Errorf("whole snapshot: %w", err)
			}
			if string(frames[0]) == kvmsg.KeySnapshotEnd {
				return 0, nil
			}
		}
	case 1:
		for range 5 {
			if _, err := testkit.RecvWithin(dealer, 10*time.Second); err != nil {
				return 0, fmt.Errorf("snapshot start: %w", err)
			}
		}
	}
	return kind, nil
}
