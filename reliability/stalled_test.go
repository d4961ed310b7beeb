package reliability

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// freshJoinWithin bounds a whole-map join beside the stalled joiners: the
// issue's 5 s, times 5 for this shared 2-core box (at a load average of
// 10-15 the test process gets a fraction of a core; the figures the test
// logs are what the README reports).
const freshJoinWithin = 5 * 5 * time.Second

// fillMap stores n keys /big/0000000.. with 100-byte values and waits for
// the store to reach sequence want.
func fillMap(t *testing.T, srv *inproc, push *zmq.Socket, n int, val string, want int64) {
	t.Helper()
	v := []byte(strings.Repeat(val, 100/len(val)))
	for i := range n {
		sendOrFail(t, push, setMsg(fmt.Sprintf("/big/%07d", i), v))
	}
	waitFor(t, 120*time.Second, "map filled", func() bool { return srv.Stats().Sequence.Load() == want })
}

func heapAfterGC() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// settleHeap waits (up to 10s) until what an earlier test's server left
// behind has been freed: two readings 200ms apart within 1 MiB. Without
// it, a previous server still shutting down (seen under -count=6: 24 MiB)
// is freed during the measurement and hides what the views pin.
func settleHeap(t *testing.T) {
	t.Helper()
	prev := heapAfterGC()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		cur := heapAfterGC()
		if d := cur - prev; d < 1<<20 && d > -(1<<20) {
			return
		}
		prev = cur
	}
	t.Logf("heap still moving after 10s (%.1f MiB): the figures below may be off", float64(prev)/mib)
}

// TestStalledJoiners is issue 11's behaviour 1: 70 joiners that ask for the
// whole map and never read (more than the server's 64 stream slots) must neither
// lock out a fresh joiner nor pin their map versions for ever. The fresh
// joiner gets the whole map within freshJoinWithin; each stalled stream is
// ended by the progress deadline (counted as stalled); the old map version
// they pinned while every key was overwritten is freed.
func TestStalledJoiners(t *testing.T) {
	keys := 200000
	if raceEnabled {
		keys = 50000
	}
	const stalledPeers = 70
	deadline := 8 * time.Second
	// ZMTP heartbeats off: with them, the server would drop the stalled
	// peers (which answer no PING once their queues are full) after 30 s,
	// before the last one here reads its refusal.
	// 64 stream slots, so that 70 stalled joiners would hold them all if
	// stalled streams kept their slots.
	// The resume window off: it keeps the overwrites below by design (up
	// to --resume-window); the heap check is about the pinned map versions.
	settleHeap(t)
	srv := startServer(t, server.Config{SnapshotDeadline: deadline, ZMTPHeartbeat: -1, MaxStreams: 64, ResumeWindow: -1})
	zctx := newContext(t, 0)
	push := connect(t, zctx, zmq.PUSH, srv.Port(), 2, transport.Options{SndHWM: 100000})
	defer push.Close()
	fillMap(t, srv, push, keys, "v", int64(keys))
	heapBase := heapAfterGC()

	var stalled []*zmq.Socket
	for range stalledPeers {
		d := connect(t, zctx, zmq.DEALER, srv.Port(), 0, transport.Options{})
		defer d.Close()
		sendOrFail(t, d, [][]byte{[]byte(kvmsg.CmdSnapshot), nil})
		stalled = append(stalled, d)
	}
	st := srv.Stats()
	waitFor(t, 30*time.Second, "every stalled request seen", func() bool {
		return st.StreamsInFlight.Load()+st.SnapshotsWaiting.Load() == stalledPeers
	})
	requested := time.Now()

	// Overwrite every key: the stalled streams' views keep the old version.
	fillMap(t, srv, push, keys, "w", int64(2*keys))
	heapPinned := heapAfterGC()
	if n := st.SnapshotAborts.Get(actors.RefusedStalled); n > 0 {
		t.Fatalf("%d streams already ended %v after the requests: the overwrite took longer than the %v deadline, raise it", n, time.Since(requested), deadline)
	}
	pinnedAge := time.Duration(st.PinnedViewNanos.Load())

	// The fresh joiner has a ZeroMQ context (an I/O thread) of its own, as
	// a client process would: the stalled DEALERs' context is busy taking
	// in what their buffers still absorb.
	start := time.Now()
	m, seq := snapshotMap(t, newContext(t, 0), srv.Port(), "", freshJoinWithin)
	join := time.Since(start)
	if len(m) != keys || seq != int64(2*keys) || m["/big/0000000"][0] != 'w' {
		t.Fatalf("fresh joiner got %d keys at seq %d, want %d at %d, overwritten", len(m), seq, keys, 2*keys)
	}
	m = nil
	t.Logf("fresh joiner: %d keys in %v beside %d stalled joiners (%d stalled streams, %d in flight)",
		keys, join.Round(time.Millisecond), stalledPeers, st.StreamsStalled.Load(), st.StreamsInFlight.Load())

	waitFor(t, 3*deadline, "stalled streams ended by the deadline", func() bool {
		return st.SnapshotAborts.Get(actors.RefusedStalled) == stalledPeers && st.StreamsInFlight.Load() == 0
	})
	ended := time.Since(requested)
	heapAfter := heapAfterGC()
	t.Logf("heap: %.1f MiB with the map, %.1f MiB with the old version pinned (view age %v), %.1f MiB after the streams ended (%v after the requests)",
		float64(heapBase)/mib, float64(heapPinned)/mib, pinnedAge.Round(time.Millisecond), float64(heapAfter)/mib, ended.Round(time.Millisecond))
	if pin := heapPinned - heapBase; pin < int64(keys)*50 {
		t.Fatalf("overwriting %d keys under pinned views grew the heap by only %d bytes: the views pinned nothing?", keys, pin)
	}
	// What ending the streams must free is the old version: at least half
	// of its 100-byte values. Not "back to the base": the overwrite also
	// grew the raft log, which an in-memory server keeps until its next
	// snapshot (about 32 MiB of the 64 the overwrite added at 200,000 keys).
	if freed := heapPinned - heapAfter; freed < int64(keys)*50 {
		t.Errorf("ending the stalled streams freed %d bytes of heap (%d pinned → %d after; %d before the overwrite), want at least %d: the old map version is still held",
			freed, heapPinned, heapAfter, heapBase, int64(keys)*50)
	}
	if got := st.PinnedViewNanos.Load(); got != 0 {
		waitFor(t, 5*time.Second, "pinned view age back to 0", func() bool { return st.PinnedViewNanos.Load() == 0 })
	}
	if n := st.StreamsStalled.Load(); n != 0 {
		t.Errorf("%d streams still counted as stalled", n)
	}

	// A stalled peer that reads at last finds the refusal after what
	// reached it: a KTHXBAI with sequence 0 and refused=stalled.
	d := stalled[0]
	for n := 0; ; n++ {
		frames, err := testkit.RecvWithin(d, 10*time.Second)
		if err != nil {
			t.Fatalf("stalled peer: no refusal after %d messages: %v", n, err)
		}
		msg, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if string(msg.Key) == kvmsg.KeySnapshotEnd {
			if r, _ := msg.Prop(kvmsg.PropRefused); r != actors.RefusedStalled || msg.Seq != 0 {
				t.Fatalf("stalled peer's last message: KTHXBAI seq %d refused=%q, want seq 0 refused=stalled", msg.Seq, r)
			}
			t.Logf("stalled peer: %d KVSYNCs then KTHXBAI refused=stalled", n)
			break
		}
	}
}

// TestFloodingPeerDoesNotLockOut is behaviour 1's second case: one peer with
// 5,000 queued requests it never reads, and a fresh joiner that must still
// get its whole snapshot within freshJoinWithin. The flooding peer gets at
// most MaxWaitingPerPeer requests queued; the rest are refused and counted.
func TestFloodingPeerDoesNotLockOut(t *testing.T) {
	keys := 200000
	if raceEnabled {
		keys = 50000
	}
	const requests = 5000
	srv := startServer(t, server.Config{})
	zctx := newContext(t, 0)
	push := connect(t, zctx, zmq.PUSH, srv.Port(), 2, transport.Options{SndHWM: 100000})
	defer push.Close()
	fillMap(t, srv, push, keys, "v", int64(keys))

	flood := connect(t, zctx, zmq.DEALER, srv.Port(), 0, transport.Options{SndHWM: requests + 10})
	defer flood.Close()
	for range requests {
		sendOrFail(t, flood, [][]byte{[]byte(kvmsg.CmdSnapshot), nil})
	}
	st := srv.Stats()
	wantRefused := int64(requests - 1 - server.DefaultMaxWaitingPerPeer)
	waitFor(t, 30*time.Second, "flood requests seen", func() bool {
		return st.SnapshotRefusals.Get(actors.RefusedTooMany) == wantRefused
	})
	if w := st.SnapshotsWaiting.Load(); w != server.DefaultMaxWaitingPerPeer {
		t.Errorf("%d requests waiting, want the per-peer cap %d", w, server.DefaultMaxWaitingPerPeer)
	}
	start := time.Now()
	m, _ := snapshotMap(t, newContext(t, 0), srv.Port(), "", freshJoinWithin)
	if len(m) != keys {
		t.Fatalf("fresh joiner got %d keys, want %d", len(m), keys)
	}
	t.Logf("fresh joiner: %d keys in %v beside a peer with %d requests (%d refused too_many_requests, %d waiting)",
		keys, time.Since(start).Round(time.Millisecond), requests, wantRefused, st.SnapshotsWaiting.Load())
}
