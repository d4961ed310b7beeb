package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// loadKeys pushes n keys "/big/%07d" through several PUSH sockets and waits
// until the server has sequenced them all.
func loadKeys(t *testing.T, srv *Server, prefix string, n int) {
	t.Helper()
	const pushers = 4
	var wg sync.WaitGroup
	errs := make(chan error, pushers)
	base := srv.Stats().Sequence.Load()
	for w := 0; w < pushers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			zctx, _ := zmq.NewContext()
			defer zctx.Term()
			push, err := transport.Connect(zctx, zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port()+2), transport.Options{SndHWM: 100000, Linger: 10 * time.Second})
			if err != nil {
				errs <- err
				return
			}
			defer push.Close()
			uuid := make([]byte, kvmsg.UUIDLen)
			body := []byte("0123456789abcdef")
			for i := w; i < n; i += pushers {
				m := kvmsg.Msg{Key: []byte(fmt.Sprintf("%s%07d", prefix, i)), UUID: uuid, Body: body}
				if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, 120*time.Second, fmt.Sprintf("%d keys stored", n), func() bool {
		return srv.Stats().Sequence.Load() >= base+int64(n)
	})
}

// TestMillionKeySnapshot: a joiner with default socket options receives all
// of a 1,000,000-key snapshot, while updates keep being published and another
// client's small snapshot is answered without waiting for the big one.
func TestMillionKeySnapshot(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("million-key test runs without -race and -short (make test-heavy)")
	}
	const n = 1_000_000
	srv := startServer(t, Config{})
	start := time.Now()
	loadKeys(t, srv, "/big/", n)
	t.Logf("loaded %d keys in %v", n, time.Since(start))

	p := newPeer(t, srv.Port())
	push, sub := p.push(), p.sub("/live/")
	subscribed(t, push, sub, "/live/ping")
	small := p.dealer()
	set(t, push, "/small/only", "x")

	// The big joiner runs in its own goroutine with its own context and
	// default options.
	type result struct {
		syncs, seq int64
		first, end time.Duration
		err        error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		zctx, _ := zmq.NewContext()
		defer zctx.Term()
		dealer, err := transport.Connect(zctx, zmq.DEALER, fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port()), transport.Options{})
		if err != nil {
			r.err = err
			return
		}
		defer dealer.Close()
		t0 := time.Now()
		if err := transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/big/")}, 0); err != nil {
			r.err = err
			return
		}
		if err := dealer.SetRcvtimeo(10 * time.Second); err != nil {
			r.err = err
			return
		}
		rx := transport.NewReceiver(dealer)
		for {
			frames, _, err := rx.Recv(0)
			if err != nil {
				r.err = fmt.Errorf("after %d KVSYNCs: %w", r.syncs, err)
				return
			}
			if r.syncs == 0 {
				r.first = time.Since(t0)
			}
			if string(frames[0]) == kvmsg.KeySnapshotEnd {
				m, err := kvmsg.Decode(frames, kvmsg.Limits{})
				if err != nil {
					r.err = err
					return
				}
				r.seq, r.end = m.Seq, time.Since(t0)
				return
			}
			if len(frames) != kvmsg.NumFrames {
				r.err = fmt.Errorf("KVSYNC with %d frames", len(frames))
				return
			}
			r.syncs++
		}
	}()

	// While it streams: updates are published promptly and a small
	// snapshot completes.
	waitFor(t, 10*time.Second, "big stream started", func() bool { return srv.Stats().StreamsInFlight.Load() > 0 })
	var worst time.Duration
	for i := 0; i < 20; i++ {
		t0 := time.Now()
		set(t, push, fmt.Sprintf("/live/%d", i), "v")
		m := recvMsg(t, sub, 5*time.Second)
		if string(m.Key) != fmt.Sprintf("/live/%d", i) {
			t.Fatalf("live update %q", m.Key)
		}
		worst = max(worst, time.Since(t0))
	}
	t0 := time.Now()
	snap, _ := snapshot(t, small, "/small/", 5*time.Second)
	smallTook := time.Since(t0)
	if len(snap) != 1 {
		t.Errorf("small snapshot during the big one: %v", keys(snap))
	}
	bigStillRunning := srv.Stats().StreamsInFlight.Load() > 0

	r := <-done
	if r.err != nil {
		t.Fatalf("big snapshot: %v", r.err)
	}
	if r.syncs != n {
		t.Fatalf("big snapshot delivered %d KVSYNCs, want %d", r.syncs, n)
	}
	t.Logf("1M-key snapshot: first KVSYNC after %v, KTHXBAI (seq %d) after %v; during it: worst update round trip %v, small snapshot %v (big still streaming: %v)",
		r.first, r.seq, r.end, worst, smallTook, bigStillRunning)
	if worst > 2*time.Second {
		t.Errorf("updates stalled %v during the big snapshot", worst)
	}
	if smallTook > 2*time.Second {
		t.Errorf("small snapshot took %v during the big one", smallTook)
	}
}

// TestMillionKeyTTLTick: with a million keys stored (a thousand with a far
// ttl), a key set with a short ttl still expires on time: the reaper does not
// scan the map (actors/reaper_test.go measures the tick itself).
func TestMillionKeyTTLTick(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("million-key test runs without -race and -short (make test-heavy)")
	}
	srv := startServer(t, Config{})
	loadKeys(t, srv, "/k/", 1_000_000)
	p := newPeer(t, srv.Port())
	push, sub := p.push(), p.sub("/t/")
	subscribed(t, push, sub, "/t/ping")
	for i := 0; i < 1000; i++ {
		set(t, push, fmt.Sprintf("/far/%d", i), "v", "ttl", "3600")
	}
	set(t, push, "/t/soon", "v", "ttl", "1")
	sent := time.Now()
	recvMsg(t, sub, 2*time.Second) // the set itself
	m := recvMsg(t, sub, 3*time.Second)
	if string(m.Key) != "/t/soon" || len(m.Body) != 0 {
		t.Fatalf("expected expiry of /t/soon, got %q %q", m.Key, m.Body)
	}
	if late := time.Since(sent) - time.Second; late > time.Second {
		t.Errorf("expiry %v late with a million keys stored", late)
	}
}
