package guideclient_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/bench/baseline"
	"github.com/clonekv/clonekv/internal/guideclient"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
)

// TestAgainstBaseline runs two Guide clients against the seed-design server,
// one from the start and one joining a second later (so it gets a non-empty
// snapshot), and checks that each ends with the server's state. A client is
// stopped at an arbitrary point, so the snapshot taken right after may be a
// few sequences ahead (its own last update still in flight, or a ttl
// expiry): a recorder subscribed from the start supplies those updates, and
// the client's map rolled forward by them must equal the snapshot exactly.
func TestAgainstBaseline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv, err := baseline.New(baseline.Config{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, srv, 5*time.Second) // stopped when the test ends

	checkGuideClients(ctx, t, srv.Port())
	t.Logf("server: %+v", srv.Stats())
}

// checkGuideClients runs two Guide clients against the server at port, one
// from the start and one joining a second later, and checks each ends with
// the server's state (see TestAgainstBaseline).
func checkGuideClients(ctx context.Context, t *testing.T, port int) {
	rec := newRecorder(t, port+1, "/client/")

	type outcome struct {
		name string
		res  *guideclient.Result
		err  error
	}
	done := make(chan outcome, 2)
	runClient := func(name string, delay, length time.Duration, seed uint64) {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		cctx, ccancel := context.WithTimeout(ctx, length)
		defer ccancel()
		res, err := guideclient.Run(cctx, guideclient.Config{
			Port: port, Interval: 50 * time.Millisecond, Rand: rand.New(rand.NewPCG(seed, seed)),
		})
		done <- outcome{name, res, err}
	}
	go runClient("early", 0, 3*time.Second, 1)
	go runClient("late", time.Second, 1500*time.Millisecond, 2)

	for range 2 {
		var out outcome
		for received := false; !received; {
			select {
			case out = <-done:
				received = true
			default:
				rec.poll(t, 20*time.Millisecond)
			}
		}
		if out.err != nil {
			t.Fatalf("%s client: %v", out.name, out.err)
		}
		snap, snapSeq, err := guideclient.Snapshot(ctx, "tcp://127.0.0.1", port, "/client/", 3*time.Second)
		if err != nil {
			t.Fatalf("snapshot after %s client: %v", out.name, err)
		}
		res := out.res
		if res.Sent < 20 || res.Received < res.Sent/2 {
			t.Errorf("%s client: %+v, expected ~40-60 sent and most received", out.name, res)
		}
		gap := snapSeq - res.Sequence
		if gap < 0 || gap > 10 {
			t.Fatalf("%s client: at %d, snapshot at %d", out.name, res.Sequence, snapSeq)
		}
		rec.waitFor(t, snapSeq)
		rolled := maps.Clone(res.Map)
		for seq := res.Sequence + 1; seq <= snapSeq; seq++ {
			m, ok := rec.updates[seq]
			if !ok {
				t.Fatalf("recorder missed update %d", seq)
			}
			if len(m.Body) == 0 {
				delete(rolled, string(m.Key))
			} else {
				rolled[string(m.Key)] = string(m.Body)
			}
		}
		if res.Gaps > 0 {
			// The Guide client's known window: its SUB subscription may reach
			// the server after its snapshot request, and it does not detect
			// the updates it missed.
			t.Logf("%s client missed updates (%d gaps after joining at %d): not comparing its map",
				out.name, res.Gaps, res.Joined)
		} else if !maps.Equal(rolled, snap) {
			t.Errorf("%s client: map (at %d, rolled forward to %d) differs from snapshot:\n%s",
				out.name, res.Sequence, snapSeq, diff(rolled, snap))
		}
		t.Logf("%s client: joined at %d with %d keys; ended with %d keys at %d (server snapshot at %d); sent %d, received %d, discarded %d",
			out.name, res.Joined, res.Snapshot, len(res.Map), res.Sequence, snapSeq, res.Sent, res.Received, res.Discarded)
	}
	t.Logf("recorder saw %d deletes", rec.deletes)
}

// recorder is a SUB that keeps every published update by sequence.
type recorder struct {
	zctx    *zmq.Context
	sub     *zmq.Socket
	poller  *zmq.Poller
	updates map[int64]kvmsg.Msg
	deletes int
	last    int64
}

func newRecorder(t *testing.T, port int, subtree string) *recorder {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	sub, err := zctx.NewSocket(zmq.SUB)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{zctx: zctx, sub: sub, poller: zmq.NewPoller(), updates: make(map[int64]kvmsg.Msg)}
	t.Cleanup(func() {
		_ = r.sub.Close()
		_ = r.zctx.Term()
	})
	if err := sub.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := sub.SetSubscribe(subtree); err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(fmt.Sprintf("tcp://127.0.0.1:%d", port)); err != nil {
		t.Fatal(err)
	}
	r.poller.Add(sub, zmq.POLLIN)
	return r
}

// poll records what arrives within d.
func (r *recorder) poll(t *testing.T, d time.Duration) {
	t.Helper()
	polled, err := r.poller.Poll(d)
	if err != nil {
		t.Fatal(err)
	}
	for len(polled) > 0 {
		frames, err := r.sub.RecvMessageBytes(zmq.DONTWAIT)
		if err != nil {
			return // drained
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Errorf("recorder: %v", err)
			continue
		}
		r.updates[m.Seq] = m
		r.last = max(r.last, m.Seq)
		if m.IsDelete() {
			r.deletes++
		}
	}
}

// waitFor records until it has seen sequence seq.
func (r *recorder) waitFor(t *testing.T, seq int64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for r.last < seq {
		if time.Now().After(deadline) {
			t.Fatalf("recorder saw up to %d, waiting for %d", r.last, seq)
		}
		r.poll(t, 20*time.Millisecond)
	}
}

func diff(a, b map[string]string) string {
	var lines []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			lines = append(lines, fmt.Sprintf("  %s: client %q, snapshot %q (present %v)", k, v, w, ok))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			lines = append(lines, fmt.Sprintf("  %s: missing from client, snapshot %q", k, w))
		}
	}
	sort.Strings(lines)
	return fmt.Sprint(lines)
}
