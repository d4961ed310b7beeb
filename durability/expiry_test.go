package durability

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// TestMassExpiryPaced is behaviour 2 of issue 11 at a reduced size (the
// full 200,000 keys run in make soak, TestMassExpirySoak): 30,000 keys with
// the same ttl expire together (all due when the server starts). A raw subscriber at the default high-water
// marks (server --pub-hwm 10000, its own ZMQ_RCVHWM 1000) that keeps reading
// sees every sequence, a clonekv client following everything never
// re-joins, and updates sent while the expiries stream are published within
// a second.
func TestMassExpiryPaced(t *testing.T) {
	t.Parallel()
	r := expiryStorm(t, 30_000)
	r.check(t, time.Second)
}

// stormResult is what one mass expiry looked like from the subscribers.
type stormResult struct {
	n          int
	sub        subStats
	slow       subStats // the raw subscriber that reads at twice the default expiry rate
	client     client.Stats
	clientKeys int
	probes     int
	probeMax   time.Duration
	spread     time.Duration // first to last expiry at the raw subscriber
	setFor     time.Duration // how long setting the keys took
}

// expiryStorm makes n keys with the same ttl expire together: it sets
// them with a ttl of 1 s on a server whose reaper does not run (--reap-interval
// 1h, so no load makes the burst outlast the ttl), stops it, waits until
// every deadline has passed and starts it again on the same data directory
// with the given flags: there every key is due at once. A raw subscriber
// connected before the restart, and a clonekv client that joins after it,
// follow the storm; a probe update is sent every 50ms meanwhile.
func expiryStorm(t *testing.T, n int, extra ...string) stormResult {
	t.Helper()
	dir, port := t.TempDir(), testkit.FreePorts(t)
	s := newSockets(t, port)
	p := start(t, dir, port, "--reap-interval", "1h")
	probes := newProbeSub(t, port)
	waitFor(t, 10*time.Second, "the probe subscriber connected", probes.heard)
	push := s.connect(zmq.PUSH, 2)
	push.SetSndhwm(100_000)
	began := time.Now()
	for i := range n {
		set(t, push, fmt.Sprintf("/x/%06d", i), "v", 1)
	}
	set(t, push, "/probe/ready", "v", 0)
	waitFor(t, 5*time.Minute, "the keys stored", func() bool { return probes.seen("/probe/ready") })
	setFor := time.Since(began)
	sub := startRawSub(t, port, 0)
	slow := startRawSub(t, port, 2*server.DefaultExpiryRate)
	waitFor(t, 10*time.Second, "the raw subscribers connected", func() bool { return sub.heard() && slow.heard() })
	sub.restarting()
	slow.restarting()
	p.term(t)
	stopped := time.Now()
	waitFor(t, 10*time.Second, "every deadline passed", func() bool { return time.Since(stopped) > 1500*time.Millisecond })

	// Both subscribers reconnect by themselves (every 10ms). The storm
	// starts as soon as the restarted server leads, so a subscriber may
	// come back a few expiries late: rawSub counts those as late, not as
	// lost (the pipe to it was empty then: nothing could be dropped).
	p = start(t, dir, port, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{Endpoints: []string{fmt.Sprintf("tcp://127.0.0.1:%d", port)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer c.Close()
	waitFor(t, time.Minute, "the first expiry", func() bool { return sub.stats().deletes > 0 })
	deadline := time.Now().Add(5 * time.Minute)
	sent := 0
	for sub.stats().deletes < n && time.Now().Before(deadline) {
		key := fmt.Sprintf("/probe/%04d", sent)
		probes.sent(key)
		set(t, push, key, "v", 0)
		sent++
		time.Sleep(50 * time.Millisecond) // the probes' pace, not a wait for a condition
	}
	// Every expiry, or a gap that check reports, at both raw subscribers.
	testkit.WaitForExplained(t, time.Minute, 10*time.Millisecond, "every expiry at the raw subscribers", func() bool {
		a, b := sub.stats(), slow.stats()
		return (a.deletes+int(a.late) >= n || a.gaps > 0) && (b.deletes+int(b.late) >= n || b.gaps > 0)
	}, func() string {
		return fmt.Sprintf("the one reading as fast as it can %+v; the one reading at most %d/s %+v", sub.stats(), 2*server.DefaultExpiryRate, slow.stats())
	})
	waitFor(t, 30*time.Second, "every probe published", func() bool { return probes.count() >= sent })
	waitFor(t, time.Minute, "the client caught up", func() bool {
		st := c.Stats()
		return st.Keys == sent+1 || st.Resyncs > 0
	})
	r := stormResult{n: n, sub: sub.stop(), slow: slow.stop(), client: c.Stats(), probes: sent, setFor: setFor}
	r.clientKeys = r.client.Keys
	r.probeMax = probes.max()
	r.spread = r.sub.lastDelete.Sub(r.sub.firstDelete)
	p.term(t)
	return r
}

// check asserts behaviour 2 and logs the figures.
func (r stormResult) check(t *testing.T, probeBound time.Duration) {
	t.Helper()
	t.Logf("%d keys set in %v; expired over %v (%.0f/s) at the raw subscriber: %d messages, %d gaps (%d lost); "+
		"at the one reading at most %d/s: over %v, %d gaps (%d lost); back after the restart %d and %d updates late; client: joins %d, resyncs %d, gaps %d; %d probes, slowest published after %v",
		r.n, r.setFor.Round(time.Millisecond), r.spread.Round(time.Millisecond), float64(r.n)/r.spread.Seconds(), r.sub.msgs, r.sub.gaps, r.sub.lost,
		2*server.DefaultExpiryRate, r.slow.lastDelete.Sub(r.slow.firstDelete).Round(time.Millisecond), r.slow.gaps, r.slow.lost, r.sub.late, r.slow.late,
		r.client.Joins, r.client.Resyncs, r.client.Gaps, r.probes, r.probeMax.Round(time.Millisecond))
	for _, s := range []struct {
		name string
		st   subStats
	}{{"raw subscriber", r.sub}, {"raw subscriber reading at twice the expiry rate", r.slow}} {
		if s.st.gaps > 0 {
			t.Errorf("%s at the default HWM: %d gaps, %d updates lost (first at sequence %d)", s.name, s.st.gaps, s.st.lost, s.st.firstGap)
		}
		if s.st.deletes+int(s.st.late) < r.n || s.st.deletes > r.n {
			t.Errorf("%s saw %d expiries (and came back %d updates late after the restart), want %d", s.name, s.st.deletes, s.st.late, r.n)
		}
	}
	if r.client.Joins != 1 || r.client.Resyncs != 0 {
		t.Errorf("client following everything: %d joins, %d re-joins (gaps %d, last error %q), want 1 join and none", r.client.Joins, r.client.Resyncs, r.client.Gaps, r.client.LastError)
	}
	if r.clientKeys != r.probes+1 {
		t.Errorf("client holds %d keys after the storm, want the %d probes and /probe/ready", r.clientKeys, r.probes)
	}
	if r.probes == 0 {
		t.Errorf("no probe sent during the storm")
	}
	if r.probeMax > probeBound {
		t.Errorf("an update sent during the mass expiry was published after %v, want within %v", r.probeMax, probeBound)
	}
}

// subStats is what a raw subscriber saw.
type subStats struct {
	msgs, deletes, gaps int
	lost, firstGap      int64
	late                int64 // sequences published by the restarted server before this subscriber was back
	hugz                int
	firstDelete         time.Time
	lastDelete          time.Time
}

// rawSub is a SUB with libzmq's defaults (ZMQ_RCVHWM 1000) that reads as
// fast as it can on its own goroutine, which creates, uses and closes it,
// and checks the sequence of every update.
type rawSub struct {
	rate int // messages per second at most (0: as fast as it can)
	mu   sync.Mutex
	st   subStats
	// rebase: the server is restarting; the first message from the new
	// one (an update or HUGZ above the last sequence) sets where this
	// subscriber came back, and what it jumped over is late, not lost.
	rebase bool
	quit   chan struct{}
	done   chan struct{}
}

func startRawSub(t *testing.T, port, rate int) *rawSub {
	r := &rawSub{rate: rate, quit: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	go r.run(port, ready)
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *rawSub) run(port int, ready chan<- error) {
	defer close(r.done)
	sock, err := zmq.NewSocket(zmq.SUB)
	if err == nil {
		err = sock.SetSubscribe("")
	}
	if err == nil {
		sock.SetLinger(transport.MinLinger)
		err = sock.SetReconnectIvl(10 * time.Millisecond) // back soon after the restart
	}
	if err == nil {
		err = sock.Connect(fmt.Sprintf("tcp://127.0.0.1:%d", port+1))
	}
	ready <- err
	if err != nil {
		return
	}
	defer sock.Close()
	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	rx := transport.NewReceiver(sock)
	var last int64
	var first time.Time
	for {
		select {
		case <-r.quit:
			return
		default:
		}
		if polled, err := poller.Poll(50 * time.Millisecond); err != nil || len(polled) == 0 {
			continue
		}
		if r.rate > 0 {
			// A reader of r.rate messages a second: ahead of that pace
			// it waits (its pace, not a wait for a condition).
			if first.IsZero() {
				first = time.Now()
			}
			if ahead := time.Until(first.Add(time.Duration(r.stats().msgs) * time.Second / time.Duration(r.rate))); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		r.mu.Lock()
		for range 100 {
			frames, _, err := rx.Recv(zmq.DONTWAIT)
			if err != nil {
				break
			}
			if len(frames) != kvmsg.NumFrames || len(frames[1]) != kvmsg.SeqLen {
				continue
			}
			if string(frames[0]) == kvmsg.KeyHeartbeat {
				r.st.hugz++
				// HUGZ seq= is the last sequence published before it: one
				// above what arrived is a lost tail (which no later update
				// would show once the storm is over).
				if v, ok := kvmsg.LookupProp(frames[3], "seq"); ok {
					if hs, err := strconv.ParseInt(string(v), 10, 64); err == nil && hs > last {
						if last != 0 {
							r.jumped(last, hs)
						}
						last = hs
					}
				}
				continue
			}
			seq := int64(binary.BigEndian.Uint64(frames[1]))
			if last != 0 && seq > last+1 {
				r.jumped(last, seq-1)
			} else if last != 0 && seq <= last {
				r.st.gaps++ // out of order or repeated: never right
			}
			if seq > last {
				r.rebase = false // back: from here on a jump is a gap
			}
			last = seq
			r.st.msgs++
			if len(frames[4]) == 0 {
				now := time.Now()
				if r.st.deletes == 0 {
					r.st.firstDelete = now
				}
				r.st.lastDelete = now
				r.st.deletes++
			}
		}
		r.mu.Unlock()
	}
}

func (r *rawSub) heard() bool { return r.stats().hugz > 0 }

// restarting marks the server's restart: see rawSub.rebase.
func (r *rawSub) restarting() {
	r.mu.Lock()
	r.rebase = true
	r.mu.Unlock()
}

// jumped accounts for the sequences after last up to missedTo that never
// arrived: late once after a restart, else a gap.
func (r *rawSub) jumped(last, missedTo int64) {
	if r.rebase {
		r.rebase = false
		r.st.late = missedTo - last
		return
	}
	if r.st.gaps == 0 {
		r.st.firstGap = last + 1
	}
	r.st.gaps++
	r.st.lost += missedTo - last
}

func (r *rawSub) stats() subStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

func (r *rawSub) stop() subStats {
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
	<-r.done
	return r.stats()
}

// probeSub is a default-HWM SUB for "/probe/" (and HUGZ) that records when
// each probe arrives: the PUB filters by prefix, so it sees a probe when the
// server publishes it, not after a backlog of expiries.
type probeSub struct {
	rec    *recorder
	mu     sync.Mutex
	sentAt map[string]time.Time
}

func newProbeSub(t *testing.T, port int) *probeSub {
	s := newSockets(t, port)
	rec := record(s, "/probe/")
	t.Cleanup(rec.finish)
	return &probeSub{rec: rec, sentAt: map[string]time.Time{}}
}

func (p *probeSub) heard() bool { _, h := p.rec.snapshot(); return len(h) > 0 }

func (p *probeSub) sent(key string) {
	p.mu.Lock()
	p.sentAt[key] = time.Now()
	p.mu.Unlock()
}

func (p *probeSub) seen(key string) bool {
	pubs, _ := p.rec.snapshot()
	for _, u := range pubs {
		if u.Key == key {
			return true
		}
	}
	return false
}

// count is how many probes (not /probe/ready) arrived.
func (p *probeSub) count() int {
	pubs, _ := p.rec.snapshot()
	n := 0
	for _, u := range pubs {
		if u.Key != "/probe/ready" {
			n++
		}
	}
	return n
}

// max is the longest time from sending a probe to its arrival.
func (p *probeSub) max() time.Duration {
	pubs, _ := p.rec.snapshot()
	p.mu.Lock()
	defer p.mu.Unlock()
	var worst time.Duration
	for _, u := range pubs {
		if at, ok := p.sentAt[u.Key]; ok {
			worst = max(worst, u.At.Sub(at))
		}
	}
	return worst
}
