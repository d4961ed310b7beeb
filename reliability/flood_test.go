package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
)

// floodSizes are the malformed flood's load: malformed messages per second
// on each port, for how long, and the valid updates per second beside them.
func floodSizes() (perPort int, dur time.Duration, validRate int) {
	if raceEnabled {
		return 3000, 3 * time.Second, 500
	}
	return 10000, 10 * time.Second, 1000
}

// TestMalformedFlood mixes malformed messages — 10,000 a second on each of
// the three ports, plus raw TCP garbage — into valid traffic. Valid clients
// must see every valid update, in order, with latency no more than twice a
// clean run's; the server must count every malformed message it received
// and keep answering snapshots.
func TestMalformedFlood(t *testing.T) {
	perPort, dur, validRate := floodSizes()
	srv := startServer(t, server.Config{})
	zctx := newContext(t, 0)
	corpus := loadMalformed(t)

	clean := runValid(t, zctx, srv.Port(), dur, validRate, "clean")
	t.Logf("clean run:  %v", clean)

	ctx, cancel := context.WithCancel(context.Background())
	fl := startFlood(ctx, t, zctx, srv.Port(), perPort, corpus)
	flooded := runValid(t, zctx, srv.Port(), dur, validRate, "flood")
	// While the flood still runs, a joiner gets a complete snapshot.
	start := time.Now()
	keys, seq := snapshotMap(t, zctx, srv.Port(), "/valid/", 5*time.Second)
	joinTook := time.Since(start)
	cancel()
	fl.wait()
	t.Logf("flood run:  %v", flooded)
	t.Logf("flood sent: collector %d, snapshot %d, publisher %d malformed messages, %d raw TCP garbage connections; join during flood %v",
		fl.collector.Load(), fl.snapshot.Load(), fl.publisher.Load(), fl.raw.Load(), joinTook.Round(time.Millisecond))

	if want := validKeys + 2; len(keys) != want || seq < int64(clean.n+flooded.n) { // + the two pings
		t.Errorf("snapshot during flood: %d keys at seq %d, want %d keys", len(keys), seq, want)
	}
	secs := dur.Seconds()
	for name, n := range map[string]int64{"collector": fl.collector.Load(), "snapshot": fl.snapshot.Load(), "publisher": fl.publisher.Load()} {
		if float64(n) < 0.8*float64(perPort)*secs {
			t.Errorf("%s flood sent %d malformed messages in %v, want about %d/s", name, n, dur, perPort)
		}
	}
	// Every malformed message that reached the server is counted: nothing is
	// silently lost, nothing is half-applied.
	st := srv.Stats()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && (st.RejectedTotal(stats.SourceCollector) < fl.collector.Load() ||
		st.RejectedTotal(stats.SourceSnapshot) < fl.snapshot.Load()) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("server rejects: %+v", st.Rejects())
	// The raw garbage may add a few: libzmq reads a peer whose first byte is
	// not 0xFF as ZMTP/1.0 and may frame random bytes into messages, which
	// the server then rejects and counts too.
	c, s := st.RejectedTotal(stats.SourceCollector), st.RejectedTotal(stats.SourceSnapshot)
	if c < fl.collector.Load() || s < fl.snapshot.Load() || c+s > fl.collector.Load()+fl.snapshot.Load()+256*fl.raw.Load() {
		t.Errorf("server counted %d collector and %d snapshot rejects, clients sent %d and %d (and %d raw connections)",
			c, s, fl.collector.Load(), fl.snapshot.Load(), fl.raw.Load())
	}
	if want := int64(clean.n + flooded.n + 2); st.UpdatesAccepted.Load() > want+200 {
		t.Errorf("server accepted %d updates, want about %d (malformed ones were accepted)", st.UpdatesAccepted.Load(), want)
	}

	checkLatency(t, "valid updates under flood", flooded.lat, clean.lat)
}

const validKeys = 64

// validRun is what a valid subscriber saw.
type validRun struct {
	n   int
	lat latencies
}

func (v validRun) String() string { return fmt.Sprintf("%d updates, latency %v", v.n, v.lat) }

// runValid sends rate valid updates a second for dur and checks that a
// subscriber receives every one, in order; it returns their latencies.
func runValid(t *testing.T, zctx *zmq.Context, port int, dur time.Duration, rate int, tag string) validRun {
	t.Helper()
	sub := connect(t, zctx, zmq.SUB, port, 1, transport.Options{Subscribe: []string{"/valid/"}, RcvHWM: 1 << 20})
	defer sub.Close()
	push := connect(t, zctx, zmq.PUSH, port, 2, transport.Options{})
	// The subscription reaches the PUB asynchronously: ping until seen.
	waitSubscribed(t, push, sub, "/valid/ping-"+tag)
	push.Close()

	n := int(dur.Seconds() * float64(rate))
	senderErr := make(chan error, 1)
	go func() {
		senderErr <- sendPaced(zctx, port, n, rate, func(i int) [][]byte {
			return setMsg(fmt.Sprintf("/valid/%02d", i%validKeys), stampBody(int64(i), 16))
		})
	}()

	var run validRun
	var lastSeq int64
	deadline := time.Now().Add(dur + 20*time.Second)
	for run.n < n {
		frames, err := testkit.RecvWithin(sub, time.Until(deadline))
		if err != nil {
			t.Fatalf("%s: after %d of %d valid updates: %v", tag, run.n, n, err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatalf("%s: undecodable KVPUB: %v", tag, err)
		}
		if string(m.Key) == kvmsg.KeyHeartbeat || len(m.Body) < 16 {
			continue // heartbeat or ping
		}
		idx, age, _ := readStamp(m.Body)
		if idx != int64(run.n) {
			t.Fatalf("%s: got update %d, want %d (lost or reordered)", tag, idx, run.n)
		}
		if m.Seq <= lastSeq {
			t.Fatalf("%s: sequence %d after %d", tag, m.Seq, lastSeq)
		}
		lastSeq = m.Seq
		run.lat = append(run.lat, age)
		run.n++
	}
	if err := <-senderErr; err != nil {
		t.Fatalf("%s: sender: %v", tag, err)
	}
	return run
}

// sendPaced sends n messages made by mk at rate a second from its own PUSH
// socket, in ticks of 5ms.
func sendPaced(zctx *zmq.Context, port, n, rate int, mk func(i int) [][]byte) error {
	push, err := transport.Connect(zctx, zmq.PUSH, endpoint(port, 2), transport.Options{})
	if err != nil {
		return err
	}
	defer push.Close()
	push.SetLinger(5 * time.Second)
	const tick = 5 * time.Millisecond
	start := time.Now()
	for i := 0; i < n; {
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; i < n && i <= due; i++ {
			if err := transport.SendMessage(push, mk(i), 0); err != nil {
				return fmt.Errorf("send %d: %w", i, err)
			}
		}
		time.Sleep(tick)
	}
	return nil
}

// waitSubscribed sets key through push until sub receives it.
func waitSubscribed(t testing.TB, push, sub *zmq.Socket, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := transport.SendMessage(push, setMsg(key, []byte("ping")), 0); err != nil {
			t.Fatal(err)
		}
		frames, err := testkit.RecvWithin(sub, 100*time.Millisecond)
		if err == nil && string(frames[0]) == key {
			for {
				if _, err := testkit.RecvWithin(sub, 50*time.Millisecond); err != nil {
					return
				}
			}
		}
	}
	t.Fatal("subscriber never received")
}

// snapshotMap joins through a fresh DEALER and returns the subtree's map and
// the KTHXBAI sequence.
func snapshotMap(t testing.TB, zctx *zmq.Context, port int, subtree string, d time.Duration) (map[string]string, int64) {
	t.Helper()
	dealer := connect(t, zctx, zmq.DEALER, port, 0, transport.Options{})
	defer dealer.Close()
	if err := transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(subtree)}, 0); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	deadline := time.Now().Add(d)
	for {
		frames, err := testkit.RecvWithin(dealer, time.Until(deadline))
		if err != nil {
			t.Fatalf("snapshot %q after %d keys: %v", subtree, len(out), err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatalf("snapshot decode: %v", err)
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			return out, m.Seq
		}
		out[string(m.Key)] = string(m.Body)
	}
}

// flood is the malformed traffic generators; the counters are messages
// handed to the sockets.
type flood struct {
	collector, snapshot, publisher, raw atomic.Int64
	wg                                  sync.WaitGroup
	errs                                chan error
	t                                   *testing.T
}

func (f *flood) wait() {
	f.wg.Wait()
	close(f.errs)
	for err := range f.errs {
		f.t.Errorf("flood: %v", err)
	}
}

// startFlood sends perPort malformed messages a second to each port until
// ctx ends: corpus cases and random frames to the collector (PUSH) and the
// snapshot ROUTER (DEALER), junk upstream messages to the publisher
// (XSUB; PUB ignores what is not a subscription), and raw TCP connections
// that write garbage instead of a ZMTP greeting to all three.
func startFlood(ctx context.Context, t *testing.T, zctx *zmq.Context, port, perPort int, corpus []malformed) *flood {
	f := &flood{errs: make(chan error, 8), t: t}
	gen := func(typ zmq.Type, offset int, count *atomic.Int64, next func(r *rand.Rand) [][]byte) {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			sock, err := transport.Connect(zctx, typ, endpoint(port, offset), transport.Options{SndHWM: 100000})
			if err != nil {
				f.errs <- err
				return
			}
			defer sock.Close()
			r := rand.New(rand.NewPCG(uint64(offset), 7))
			start := time.Now()
			var sent int
			for ctx.Err() == nil {
				due := int(time.Since(start).Seconds() * float64(perPort))
				for ; sent < due; sent++ {
					if err := transport.SendMessage(sock, next(r), zmq.DONTWAIT); err != nil {
						if transport.IsAgain(err) {
							continue // counted only when handed to the socket
						}
						f.errs <- err
						return
					}
					count.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	coll, snap := byPort(corpus, "collector"), byPort(corpus, "snapshot")
	gen(zmq.PUSH, 2, &f.collector, func(r *rand.Rand) [][]byte {
		if r.IntN(2) == 0 {
			return coll[r.IntN(len(coll))]
		}
		return randomBadKVSET(r)
	})
	gen(zmq.DEALER, 0, &f.snapshot, func(r *rand.Rand) [][]byte {
		switch r.IntN(3) {
		case 0:
			return snap[r.IntN(len(snap))]
		case 1: // subtree longer than the key limit
			return [][]byte{[]byte(kvmsg.CmdSnapshot), randBytes(r, kvmsg.DefaultMaxKey+1+r.IntN(100))}
		}
		return randomBadRequest(r)
	})
	gen(zmq.XSUB, 1, &f.publisher, func(r *rand.Rand) [][]byte {
		b := randBytes(r, 1+r.IntN(40))
		b[0] = 2 + b[0]%250 // not a (un)subscription
		return [][]byte{b}
	})
	for off := 0; off < 3; off++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			r := rand.New(rand.NewPCG(uint64(off), 9))
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port+off), time.Second)
				if err == nil {
					c.Write(randBytes(r, 1+r.IntN(256)))
					c.Close()
					f.raw.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return f
}
