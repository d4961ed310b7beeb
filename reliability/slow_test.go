package reliability

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// latSub reads stamped updates under a prefix on its own goroutine,
// checks they arrive in order with none missing, and keeps their latencies.
type latSub struct {
	mu       sync.Mutex
	lat      latencies
	next     int64
	err      error
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func startLatSub(t testing.TB, zctx *zmq.Context, port int, prefix string) *latSub {
	t.Helper()
	sub := connect(t, zctx, zmq.SUB, port, 1, transport.Options{Subscribe: []string{prefix}, RcvHWM: 1 << 20})
	push := connect(t, zctx, zmq.PUSH, port, 2, transport.Options{})
	waitSubscribed(t, push, sub, prefix+"ping")
	push.Close()
	l := &latSub{stop: make(chan struct{}), done: make(chan struct{})}
	// A test that fails half-way never calls halt: the reader must still
	// close its socket before the context's Term (an earlier cleanup) or
	// Term waits for it for ever.
	t.Cleanup(func() { l.stopOnce.Do(func() { close(l.stop) }); <-l.done })
	go func() {
		defer close(l.done)
		defer sub.Close()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			frames, err := testkit.RecvWithin(sub, 20*time.Millisecond)
			if err != nil {
				continue
			}
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			if err != nil || len(m.Body) < 16 {
				continue
			}
			idx, age, _ := readStamp(m.Body)
			l.mu.Lock()
			if idx != l.next && l.err == nil {
				l.err = fmt.Errorf("update %d arrived when %d was due: lost or reordered", idx, l.next)
			}
			l.next = idx + 1
			l.lat = append(l.lat, age)
			l.mu.Unlock()
		}
	}()
	return l
}

// take returns the latencies since the last take.
func (l *latSub) take() latencies {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lat
	l.lat = nil
	return out
}

// halt stops the reader once it has every update up to want (the number
// sent) or after 10s, and returns any order error.
func (l *latSub) halt(want int64) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		n := l.next
		l.mu.Unlock()
		if n >= want {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil && l.next != want {
		return fmt.Errorf("received %d of %d updates", l.next, want)
	}
	return l.err
}

func stamped(prefix string, keys, pad int) func(i int64) [][]byte {
	return func(i int64) [][]byte {
		return setMsg(fmt.Sprintf("%s%03d", prefix, i%int64(keys)), stampBody(i, pad))
	}
}

// memPeaks are the peaks of a server process's memory over a phase.
type memPeaks struct {
	rss int64 // VmRSS
	// nonGo is VmRSS less what the Go runtime holds from the OS (sys less
	// released): libzmq's queues and buffers, the C heap, the binary.
	// Whatever the server's Go side keeps (collector batches, the
	// in-memory raft log between its snapshots) swings the RSS by tens of
	// MiB between phases on a loaded box; what a PUB keeps for a stalled
	// subscriber is libzmq's, in the C heap.
	nonGo int64
}

// peakMem samples a clonesrv process's RSS every 50ms for d, and every
// 200ms its Go runtime's memory from /metrics at base followed at once by
// the RSS again (so that the two readings subtracted are of one moment),
// and returns the peaks.
func peakMem(t testing.TB, pid int, base string, d time.Duration) memPeaks {
	t.Helper()
	var peak memPeaks
	next := time.Now()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if time.Now().Before(next) {
			peak.rss = max(peak.rss, rss(t, pid))
			continue
		}
		goHeld := goRuntimeHeld(t, base)
		r := rss(t, pid)
		peak.rss, peak.nonGo = max(peak.rss, r), max(peak.nonGo, r-goHeld)
		next = time.Now().Add(200 * time.Millisecond)
	}
	return peak
}

// goRuntimeHeld reads go_memstats_sys_bytes less go_memstats_heap_released_bytes
// from a server's /metrics.
func goRuntimeHeld(t testing.TB, base string) int64 {
	t.Helper()
	fams := testkit.ScrapeMetrics(t, base)
	sys, released := testkit.MetricValue(fams, "go_memstats_sys_bytes"), testkit.MetricValue(fams, "go_memstats_heap_released_bytes")
	if sys < 0 || released < 0 {
		t.Fatalf("/metrics: go_memstats_sys_bytes %v, go_memstats_heap_released_bytes %v (-1: absent)", sys, released)
	}
	return int64(sys - released)
}

// httpBase returns the http://addr of a clonesrv started with --http.
func httpBase(t testing.TB, p *proc) string {
	t.Helper()
	var addr string
	waitFor(t, 10*time.Second, "http listening", func() bool {
		rec, ok := p.logRecord("http listening")
		addr, _ = rec["addr"].(string)
		return ok && addr != ""
	})
	return "http://" + addr
}

// TestSlowSubscriber stalls one subscriber (it stops reading) while the
// server publishes hundreds of megabytes it subscribed to. The server's RSS
// (a real clonesrv process, --pub-hwm 1000) must stay bounded, another
// subscriber's latency must stay within twice a run without the stalled
// one, and the stalled one, once it reads again, must see its gap, re-join
// and converge.
func TestSlowSubscriber(t *testing.T) {
	// 10,000 x 4 KiB a second: about what this box sustains while also
	// generating it (at 20,000 the server falls behind, see the README).
	blastRate, phase := 10000, 6*time.Second
	if raceEnabled {
		// Under -race on a loaded box 10,000/s saturates the server (a
		// phase-1 p50 of 100ms, a backlog of 300+ MiB that grows into
		// phase 2); 6,000/s for 8s still blasts 187 MiB during the stall.
		blastRate, phase = 6000, 8*time.Second
	}
	const body = 4096
	const bound = 64 * mib
	// --memory: what is under test is the publisher's bound on a stalled
	// subscriber. On a data directory the fsync of this 40 MB/s blast
	// dominates the fast subscriber's latency on a loaded box (p90 in the
	// 100s of ms, over 1s in phase 2) and the server's anonymous memory
	// (its backlog behind the disk; file-backed RSS stays at 17 MiB) swings
	// by 30-170 MiB between runs, so the test would measure the disk. The
	// durable path's own behaviour is durability/'s.
	p := startClonesrv(t, "--pub-hwm", "1000", "--memory", "--http", "127.0.0.1:0")
	base := httpBase(t, p)
	zctx := newContext(t, 0)
	fast := startLatSub(t, zctx, p.port, "/lat/")
	lat := startLoader(zctx, p.port, 500, stamped("/lat/", 10, 0))
	blast := startLoader(zctx, p.port, blastRate, stamped("/blast/", 100, body))

	// Phase 1: nobody follows /blast/; the PUB filters it out.
	time.Sleep(500 * time.Millisecond)
	fast.take()
	sent0 := blast.sent.Load()
	peak1 := peakMem(t, p.pid(), base, phase)
	clean := fast.take()
	sent1 := blast.sent.Load()

	// Phase 2: two subscribers to everything stop reading: a raw replica
	// that pauses, and a clonekv client in its own process, stopped with
	// SIGSTOP.
	cp := startClientProc(t, p.port)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := startReplica(ctx, zctx, p.port, 2*time.Second, 1000)
	// Both must be following before they stall. Either may already have
	// lost updates and re-joined by then (a raw reader at RCVHWM 1000
	// beside a 24 MB/s blast, under -race on a loaded box: CI saw it), so
	// what phase 3 checks is counted from their state as they stop.
	waitFor(t, 10*time.Second, "slow subscriber following", func() bool {
		st, err := slow.State(time.Second)
		return err == nil && st.Joins >= 1 && st.Applied > 0
	})
	waitFor(t, 10*time.Second, "client process joined", func() bool {
		_, n := cp.latest() // it prints only once it has joined
		return n > 0
	})
	resume, slowAt, err := slow.Pause(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cp.signal(t, syscall.SIGSTOP)
	// Its state as it stopped is its last line: wait until the lines it
	// printed before the signal have all been read (none for 500ms).
	clientAt := cp.quiet(t, 500*time.Millisecond)
	fast.take()
	sent2 := blast.sent.Load()
	peak2 := peakMem(t, p.pid(), base, phase)
	stalled := fast.take()
	sent3 := blast.sent.Load()
	blastBytes := (sent3 - sent2) * body

	// Phase 3: it reads again, finds its gap (at the first update after
	// its backlog: Model Five has no other way to tell) and re-joins.
	resume()
	cp.signal(t, syscall.SIGCONT)
	blast.halt(t)
	time.Sleep(time.Second)
	lat.halt(t)
	if err := fast.halt(lat.sent.Load()); err != nil {
		t.Errorf("fast subscriber: %v", err)
	}
	took := converge(t, zctx, p.port, []follower{replicaFollower(0, slow), cp.follower("client process")}, 30*time.Second, "after the stall")
	st, _ := slow.State(5 * time.Second)
	cl, _ := cp.latest()

	t.Logf("phase 1 (no slow subscriber): blast %d msgs/s of %d B, server peak RSS %d MiB (%d MiB outside the Go runtime), fast subscriber %v",
		int(float64(sent1-sent0)/phase.Seconds()), body, peak1.rss/mib, peak1.nonGo/mib, clean)
	t.Logf("phase 2 (stalled subscriber): blast %d MiB it subscribed to, server peak RSS %d MiB (%+d MiB; outside the Go runtime %d MiB, %+d MiB), fast subscriber %v",
		blastBytes/mib, peak2.rss/mib, (peak2.rss-peak1.rss)/mib, peak2.nonGo/mib, (peak2.nonGo-peak1.nonGo)/mib, stalled)
	t.Logf("phase 3: stalled subscribers resumed and converged in %v: replica %d gap re-joins, %d joins; client %d resyncs (%d for gaps), %d joins",
		took.Round(time.Millisecond), st.Gaps, st.Joins, cl.Resyncs, cl.Gaps, cl.Joins)
	if blastBytes < 2*bound {
		t.Fatalf("only %d MiB published during the stall; the memory check needs at least %d", blastBytes/mib, 2*bound/mib)
	}
	// Kept at --pub-hwm 1000, the two stalled subscribers cost ~8 MiB of
	// libzmq's memory (a server that kept what they missed would grow by
	// blastBytes, at least twice this bound). The RSS as a whole swings by
	// -60 to +83 MiB between phases under -race on a loaded box, with the
	// Go runtime's share (see memPeaks): it is bounded only loosely, by
	// what was missed.
	if g := peak2.nonGo - peak1.nonGo; g > bound {
		t.Errorf("server memory outside the Go runtime grew by %d MiB while a subscriber stalled (bound %d MiB; %d MiB were published to it)", g/mib, bound/mib, blastBytes/mib)
	}
	if g := peak2.rss - peak1.rss; g > blastBytes*3/4 {
		t.Errorf("server RSS grew by %d MiB while a subscriber stalled (bound %d MiB: three quarters of the %d MiB it missed)", g/mib, blastBytes*3/4/mib, blastBytes/mib)
	}
	checkLatency(t, "fast subscriber beside a stalled one", stalled, clean)
	if st.Gaps <= slowAt.Gaps || st.Joins <= slowAt.Joins {
		t.Errorf("stalled replica: %d gaps, %d joins (%d, %d when it paused); want it to see its gap and re-join", st.Gaps, st.Joins, slowAt.Gaps, slowAt.Joins)
	}
	if cl.Resyncs <= clientAt.Resyncs || cl.Joins <= clientAt.Joins {
		t.Errorf("stopped client: %d resyncs, %d joins (%d, %d when it stopped); want it to notice and re-join", cl.Resyncs, cl.Joins, clientAt.Resyncs, clientAt.Joins)
	}
}

// TestSlowJoiner has one joiner read a large snapshot one message at a
// time. Other joiners (small and whole-map snapshots) and live updates must
// not wait for it: their times stay within twice those measured before it
// started. Then it reads fast and must get every key and the KTHXBAI.
func TestSlowJoiner(t *testing.T) {
	bigKeys := 200000
	if raceEnabled {
		bigKeys = 50000
	}
	srv := startServer(t, server.Config{})
	zctx := newContext(t, 0)
	push := connect(t, zctx, zmq.PUSH, srv.Port(), 2, transport.Options{SndHWM: 100000})
	defer push.Close()
	val := []byte(strings.Repeat("v", 100))
	for i := range bigKeys {
		sendOrFail(t, push, setMsg(fmt.Sprintf("/big/%07d", i), val))
	}
	for i := range 100 {
		sendOrFail(t, push, setMsg(fmt.Sprintf("/small/%03d", i), val))
	}
	waitFor(t, 60*time.Second, "map filled", func() bool { return srv.Stats().Sequence.Load() == int64(bigKeys+100) })

	fast := startLatSub(t, zctx, srv.Port(), "/lat/")
	lat := startLoader(zctx, srv.Port(), 200, stamped("/lat/", 10, 0))
	joins := func() (small, whole latencies) {
		for i := range 20 {
			start := time.Now()
			m, _ := snapshotMap(t, zctx, srv.Port(), "/small/", 10*time.Second)
			small = append(small, time.Since(start))
			if len(m) != 100 {
				t.Fatalf("small snapshot has %d keys", len(m))
			}
			if i%10 == 0 {
				start = time.Now()
				m, _ := snapshotMap(t, zctx, srv.Port(), "/big/", 60*time.Second)
				whole = append(whole, time.Since(start))
				if len(m) != bigKeys {
					t.Fatalf("big snapshot has %d keys", len(m))
				}
			}
		}
		return small, whole
	}
	time.Sleep(200 * time.Millisecond)
	fast.take()
	cleanSmall, cleanWhole := joins()
	cleanLat := fast.take()

	// The slow joiner: a DEALER with a tiny receive queue, read one message
	// every 10ms.
	dealer := connect(t, zctx, zmq.DEALER, srv.Port(), 0, transport.Options{RcvHWM: 10})
	defer dealer.Close()
	sendOrFail(t, dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), nil})
	slowDone := make(chan struct{})
	slowRead := make(chan int, 1)
	go func() {
		n := 0
		for {
			select {
			case <-slowDone:
				slowRead <- n
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := testkit.RecvWithin(dealer, 0); err == nil {
				n++
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	fast.take()
	slowSmall, slowWhole := joins()
	slowLat := fast.take()
	close(slowDone)
	n := <-slowRead

	// Now read the rest at full speed: every key and the KTHXBAI.
	got := n
	var end kvmsg.Msg
	for {
		frames, err := testkit.RecvWithin(dealer, 10*time.Second)
		if err != nil {
			t.Fatalf("slow joiner after %d messages: %v", got, err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			end = m
			break
		}
		got++
	}
	lat.halt(t)
	if err := fast.halt(lat.sent.Load()); err != nil {
		t.Errorf("live updates: %v", err)
	}
	t.Logf("before the slow joiner: small joins %v, whole /big/ joins %v, live updates %v", cleanSmall, cleanWhole, cleanLat)
	t.Logf("with it (it read %d messages in that time): small joins %v, whole /big/ joins %v, live updates %v", n, slowSmall, slowWhole, slowLat)
	t.Logf("slow joiner then got %d KVSYNCs and KTHXBAI at seq %d", got, end.Seq)
	if got < bigKeys+100 {
		t.Errorf("slow joiner got %d KVSYNCs, want at least %d", got, bigKeys+100)
	}
	checkLatency(t, "small joins beside a slow joiner", slowSmall, cleanSmall)
	if !within2x(slowWhole.pct(100), cleanWhole.pct(100), 200*time.Millisecond) {
		t.Errorf("whole-map joins slowed down by a slow joiner: %v vs %v", slowWhole, cleanWhole)
	}
	checkLatency(t, "live updates beside a slow joiner", slowLat, cleanLat)
}
