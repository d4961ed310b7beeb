package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/internal/testkit"
)

// clientHeartbeat is the test client's HeartbeatTimeout (five of the
// nodes' heartbeats).
const clientHeartbeat = time.Second

// TestClientFollowsAnotherNode is issue 13, test 3: a clonekv client given
// every node's endpoint follows the leader; kill -9 the leader while
// writers stream; the client ends up following another node within its
// heartbeat timeout plus an election (and a margin for a loaded machine),
// with no reset event (the same history), and its map equals the
// cluster's once the writers stop. It is also issue 14, behaviour 2 across
// a failover: every node keeps its own resume window of the one log, so
// the move is a resume (only what the client missed), never a whole
// snapshot.
func TestClientFollowsAnotherNode(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	zctx := newZctx(t)
	l := c.leader(20 * time.Second)
	eps := []string{l.endpoint()}
	for _, o := range c.others(l) {
		eps = append(eps, o.endpoint())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, client.Options{Endpoints: eps, HeartbeatTimeout: clientHeartbeat,
		SubRcvHWM: 100_000, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Every event, counted by type by one goroutine that this test stops.
	wctx, wcancel := context.WithCancel(context.Background())
	events := cl.Watch(wctx)
	var mu sync.Mutex
	counts := map[client.EventType]int{}
	var resets []client.Event
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ev := range events {
			mu.Lock()
			counts[ev.Type]++
			if ev.Type == client.EventReset {
				resets = append(resets, ev)
			}
			mu.Unlock()
		}
	}()
	defer func() { wcancel(); <-watched }()

	ws := startWriters(zctx, c.nodes, 2, 200, 10_000_000, 100)
	defer ws.halt(t)
	waitFor(t, 30*time.Second, "the client following the leader with updates applied", func() bool {
		st := cl.Stats()
		return st.Synced && st.Server == l.endpoint() && st.Updates >= 200
	})
	before := cl.Stats()
	killed := time.Now()
	c.kill9(l)
	var moved time.Duration
	waitFor(t, 30*time.Second, "the client following another node", func() bool {
		st := cl.Stats()
		if st.Synced && st.Server != l.endpoint() && st.Joins > before.Joins {
			moved = time.Since(killed)
			return true
		}
		return false
	})
	nl := c.leader(30 * time.Second)
	// The bound: the client's heartbeat timeout, an election (about 1-1.5
	// s with cluster-core's timers) and a re-join, with a wide margin for
	// a loaded 2-core machine.
	if bound := clientHeartbeat + 3*time.Second + 8*time.Second; moved > bound {
		t.Errorf("the client followed another node %v after kill -9 of its node, want within %v", moved, bound)
	}
	// The cluster goes on; the client keeps following.
	follow := cl.Stats()
	waitFor(t, 30*time.Second, "updates applied after the move", func() bool { return cl.Stats().Updates >= follow.Updates+200 })
	ws.halt(t)
	final := convergeNodes(t, zctx, c.others(l), 60*time.Second)
	want := map[string]string{}
	for k, e := range final.Map {
		want[k] = e.Body
	}
	var got *client.Snapshot
	testkit.WaitForExplained(t, 30*time.Second, 10*time.Millisecond, "the client's map equal to the cluster's", func() bool {
		got = cl.Snapshot()
		return got.Synced && got.Seq == final.Seq && maps.Equal(got.Map(), want)
	}, func() string {
		gm := got.Map()
		diff := 0
		for k, v := range want {
			if gm[k] != v {
				diff++
			}
		}
		return fmt.Sprintf("the client synced %v at seq %d with %d keys (%d differ), the cluster at %d with %d keys; client stats %+v",
			got.Synced, got.Seq, len(gm), diff, final.Seq, len(want), cl.Stats())
	})
	st := cl.Stats()
	mu.Lock()
	defer mu.Unlock()
	if st.Resets != 0 || len(resets) != 0 {
		t.Errorf("the client reset %d times (events %+v): the nodes share one history, want none", st.Resets, resets)
	}
	if st.Switches < 1 {
		t.Errorf("client switches %d, want ≥ 1", st.Switches)
	}
	if st.Resumes < 1 || st.FullResyncs != 0 {
		t.Errorf("the client's re-joins after the failover: %d resumed, %d whole snapshots (%v), want resumes only",
			st.Resumes, st.FullResyncs, st.FullReasons)
	}
	t.Logf("kill -9 of leader %s: the client followed %s %v later (new leader %s); %d joins, %d switches, %d resyncs (%d resumed), %d updates, events %v; last re-join %s of %d messages; final %d keys at sequence %d",
		l.name, st.Server, moved.Round(time.Millisecond), nl.name, st.Joins, st.Switches, st.Resyncs, st.Resumes, st.Updates, counts,
		st.LastJoin.Kind, st.LastJoin.Messages, len(want), final.Seq)
}
