package server

import (
	"fmt"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// TestSnapshotConsistentUnderUpdates: snapshots taken while updates stream
// are exactly the state at their KTHXBAI sequence, checked against a replay
// of every published update up to that sequence.
func TestSnapshotConsistentUnderUpdates(t *testing.T) {
	srv := startServer(t, Config{})
	p := newPeer(t, srv.Port())
	push, sub := p.push(), p.sub("/c/")
	subscribed(t, push, sub, "/c/ping")
	base := srv.Stats().Sequence.Load()

	const total = 4000
	// The recorder keeps every KVPUB by sequence.
	var mu sync.Mutex
	published := map[int64]kvmsg.Msg{}
	recDone := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for n := 0; n < total; {
			if time.Now().After(deadline) {
				recDone <- fmt.Errorf("recorder got %d of %d", n, total)
				return
			}
			f, err := testkit.RecvWithin(sub, time.Second)
			if err != nil {
				continue
			}
			m, err := kvmsg.Decode(f, kvmsg.Limits{})
			if err != nil || string(m.Key) == kvmsg.KeyHeartbeat {
				continue
			}
			mu.Lock()
			published[m.Seq] = m
			mu.Unlock()
			n++
		}
		recDone <- nil
	}()

	// The writer: sets and deletes over 50 keys.
	for i := 0; i < total; i++ {
		body := fmt.Sprint(i)
		if i%7 == 3 {
			body = "" // delete
		}
		set(t, push, fmt.Sprintf("/c/%02d", i%50), body)
		if i%800 == 400 {
			// A snapshot mid-stream; the replay check happens after.
			got, end := snapshot(t, p.dealer(), "/c/", 5*time.Second)
			defer checkReplay(t, &mu, published, base, got, end)
		}
	}
	if err := <-recDone; err != nil {
		t.Fatal(err)
	}
}

func checkReplay(t *testing.T, mu *sync.Mutex, published map[int64]kvmsg.Msg, base int64, got []kvmsg.Msg, end kvmsg.Msg) {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{"/c/ping": "ping"}
	for seq := base + 1; seq <= end.Seq; seq++ {
		m, ok := published[seq]
		if !ok {
			t.Fatalf("replay: update %d never published", seq)
		}
		if m.IsDelete() {
			delete(want, string(m.Key))
		} else {
			want[string(m.Key)] = string(m.Body)
		}
	}
	have := map[string]string{}
	for _, m := range got {
		have[string(m.Key)] = string(m.Body)
		if m.Seq > end.Seq {
			t.Errorf("KVSYNC %q has seq %d after the snapshot's %d", m.Key, m.Seq, end.Seq)
		}
	}
	if fmt.Sprint(have) != fmt.Sprint(want) {
		t.Errorf("snapshot at seq %d differs from the replay:\n have %v\n want %v", end.Seq, have, want)
	}
}

// TestCollectorSub: with --collector sub, PUB clients (the RFC and Model
// Six wiring) update the map.
func TestCollectorSub(t *testing.T) {
	srv := startServer(t, Config{Collector: CollectorSub})
	p := newPeer(t, srv.Port())
	pub := p.connect(zmq.PUB, 2, transport.Options{})
	sub := p.sub("/s/")
	// A PUB drops until the server's subscription arrives: repeat until the
	// first update is published.
	deadline := time.Now().Add(5 * time.Second)
	for {
		set(t, pub, "/s/first", "1")
		if f, err := testkit.RecvWithin(sub, 100*time.Millisecond); err == nil && string(f[0]) == "/s/first" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no update through the SUB collector")
		}
	}
	set(t, pub, "/s/second", "2")
	m := recvMsg(t, sub, 2*time.Second)
	for string(m.Key) == "/s/first" {
		m = recvMsg(t, sub, 2*time.Second)
	}
	if string(m.Key) != "/s/second" || string(m.Body) != "2" {
		t.Fatalf("got %q=%q", m.Key, m.Body)
	}
	snap, end := snapshot(t, p.dealer(), "/s/", 2*time.Second)
	if len(snap) != 2 || end.Seq != m.Seq {
		t.Errorf("snapshot %v at %d, want 2 keys at %d", keys(snap), end.Seq, m.Seq)
	}
}
