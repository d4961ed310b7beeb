package raftlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
)

// testCluster is three raftlog nodes in this process, over TCP on
// 127.0.0.1, each with its own data directory and store.
type testCluster struct {
	t      *testing.T
	peers  []Peer
	dirs   []string
	nodes  []*Node
	stores []*memStore
	stats  []*stats.Server
	leads  []chan Leader // each node's leadership reports (latest kept)
}

func newTestCluster(t *testing.T) *testCluster {
	base := testkit.FreePorts(t)
	c := &testCluster{t: t}
	for i := range 3 {
		c.peers = append(c.peers, Peer{ID: fmt.Sprintf("n%d", i+1), Addr: fmt.Sprintf("127.0.0.1:%d", base+i)})
		c.dirs = append(c.dirs, t.TempDir())
	}
	c.nodes, c.stores, c.stats = make([]*Node, 3), make([]*memStore, 3), make([]*stats.Server, 3)
	c.leads = make([]chan Leader, 3)
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

// start opens node i on its directory (concurrently with the others when
// asked to: a fresh cluster's Open waits for a leader, bounded).
func (c *testCluster) start(i int) error {
	st := &memStore{m: kvmap.New()}
	ss := &stats.Server{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Open(ctx, Config{Dir: c.dirs[i], NodeID: c.peers[i].ID, Peers: c.peers, Store: st, Stats: ss,
		SnapshotThreshold: 1 << 40, SnapshotInterval: time.Hour, CatchUpTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	ch := make(chan Leader, 1)
	n.OnLeadership(func(l Leader) {
		select {
		case <-ch:
		default:
		}
		ch <- l
	})
	c.nodes[i], c.stores[i], c.stats[i], c.leads[i] = n, st, ss, ch
	return nil
}

func (c *testCluster) startAll() {
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() { errs[i] = c.start(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testCluster) stop(i int) {
	if c.nodes[i] == nil {
		return
	}
	if err := c.nodes[i].Close(context.Background()); err != nil {
		c.t.Errorf("close %s: %v", c.peers[i].ID, err)
	}
	c.nodes[i] = nil
}

// leader waits until exactly one running node leads and is ready to
// propose, and returns it.
func (c *testCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		who := -1
		for i, n := range c.nodes {
			if n != nil && n.Leadership().Self {
				if who >= 0 {
					who = -2
					break
				}
				who = i
			}
		}
		if who >= 0 {
			return who
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no single leader within 20s")
	return -1
}

func setOp(key, val string) []byte {
	return AppendOps(nil, 0, []Op{{Kind: OpSet, Msg: kvmsg.Msg{Key: []byte(key), Body: []byte(val)}}})
}

// propose applies one entry at the leader, again at the next leader when
// leadership moves meanwhile (on a loaded machine a leader may step down:
// the entry may then be applied twice, which the tests allow for).
func (c *testCluster) propose(data []byte) {
	c.t.Helper()
	for try := 0; ; try++ {
		l := c.leader()
		err := c.nodes[l].Apply(data).Error()
		if err == nil {
			return
		}
		if try == 5 || !(errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader)) {
			c.t.Fatal(err)
		}
	}
}

// converge waits until every running node's store has the same sequence,
// at least seq, and the same history, and checks their maps are equal.
func (c *testCluster) converge(seq int64) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		var want int64 = -1
		for i, n := range c.nodes {
			if n == nil {
				continue
			}
			st, _ := c.stores[i].State()
			if want < 0 {
				want = st.Seq
			}
			ok = ok && st.Seq >= seq && st.Seq == want && st.History != "" && st.History == n.History()
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			for i, n := range c.nodes {
				if n != nil {
					st, _ := c.stores[i].State()
					c.t.Logf("%s: seq %d history %q", c.peers[i].ID, st.Seq, st.History)
				}
			}
			c.t.Fatalf("nodes did not converge on seq %d", seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ref *State
	for i, n := range c.nodes {
		if n == nil {
			continue
		}
		st, _ := c.stores[i].State()
		if ref == nil {
			ref = &st
			continue
		}
		if st.History != ref.History || st.Map.Len() != ref.Map.Len() {
			c.t.Fatalf("%s: history %q keys %d; want %q %d", c.peers[i].ID, st.History, st.Map.Len(), ref.History, ref.Map.Len())
		}
		ref.Map.Ascend(nil, func(e kvmap.Entry) bool {
			g, ok := st.Map.Get(e.Key())
			if !ok || g.Seq() != e.Seq() || string(g.Body()) != string(e.Body()) {
				c.t.Fatalf("%s: key %q differs", c.peers[i].ID, e.Key())
			}
			return true
		})
	}
}

// TestClusterReplicates: three nodes bootstrap one configuration, elect a
// leader, name one history; entries proposed at the leader reach every
// store in the same order; a follower refuses to propose; leadership is
// reported to each node's callback.
func TestClusterReplicates(t *testing.T) {
	c := newTestCluster(t)
	c.startAll()
	for i := range 100 {
		c.propose(setOp(fmt.Sprintf("/k/%d", i), "v"))
	}
	c.converge(100)
	l := c.leader()
	f := (l + 1) % 3
	if err := c.nodes[f].Apply(setOp("/no", "v")).Error(); err == nil {
		t.Fatal("a follower accepted a proposal")
	}
	// Every callback hears the same leader; the leader hears Self.
	for i := range 3 {
		deadline := time.After(10 * time.Second)
		for {
			var got Leader
			select {
			case got = <-c.leads[i]:
				c.leads[i] <- got
			case <-deadline:
				t.Fatalf("%s: no leadership report", c.peers[i].ID)
			}
			if got.ID == c.peers[l].ID && got.Self == (i == l) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The figures a status or a readiness probe reads.
	deadline := time.Now().Add(10 * time.Second)
	for i := range 3 {
		for {
			st := c.stats[i].Cluster.Load()
			if st != nil && st.Leader == c.peers[l].ID && st.NotReady == "" && st.AppliedIndex >= st.LeaderCommitIndex-1 {
				if want := map[bool]string{true: "leader", false: "follower"}[i == l]; st.Role != want {
					t.Fatalf("%s: role %q, want %q", c.peers[i].ID, st.Role, want)
				}
				if i == l {
					for _, p := range st.Peers {
						if !p.Known {
							t.Fatalf("leader does not know peer %s", p.Name)
						}
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %+v", c.peers[i].ID, st)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestClusterLeaderLoss: stopping the leader elects another, which takes
// proposals; the old leader rejoins from its data directory and catches up;
// a follower restarted alone (no quorum) serves its own committed state,
// says it has no leader, and catches up once the others are back.
func TestClusterLeaderLoss(t *testing.T) {
	c := newTestCluster(t)
	c.startAll()
	old := c.leader()
	hist := c.nodes[old].History()
	for i := range 50 {
		c.propose(setOp(fmt.Sprintf("/a/%d", i), "1"))
	}
	c.converge(50)
	old = c.leader()
	c.stop(old)
	start := time.Now()
	l := c.leader()
	t.Logf("new leader %s after %v", c.peers[l].ID, time.Since(start).Round(time.Millisecond))
	for i := range 50 {
		c.propose(setOp(fmt.Sprintf("/b/%d", i), "2"))
	}
	if err := c.start(old); err != nil {
		t.Fatal(err)
	}
	c.converge(100)
	for i, n := range c.nodes {
		if n.History() != hist {
			t.Fatalf("%s: history %q, want %q", c.peers[i].ID, n.History(), hist)
		}
	}

	// Stop everyone; restart one follower alone: it has no leader, yet its
	// store holds everything it knew to be committed.
	lone := (c.leader() + 1) % 3
	before, _ := c.stores[lone].State()
	seqBefore := before.Seq
	for i := range 3 {
		c.stop(i)
	}
	c.nodes[lone] = nil
	func() {
		cfgStart := time.Now()
		st := &memStore{m: kvmap.New()}
		ss := &stats.Server{}
		n, err := Open(context.Background(), Config{Dir: c.dirs[lone], NodeID: c.peers[lone].ID, Peers: c.peers, Store: st, Stats: ss,
			SnapshotThreshold: 1 << 40, SnapshotInterval: time.Hour, CatchUpTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[lone], c.stores[lone], c.stats[lone] = n, st, ss
		t.Logf("lone follower open after %v", time.Since(cfgStart).Round(time.Millisecond))
	}()
	if s, _ := c.stores[lone].State(); s.Seq != seqBefore || s.History != hist {
		t.Fatalf("lone follower serves seq %d history %q, want %d %q", s.Seq, s.History, seqBefore, hist)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.stats[lone].Cluster.Load()
		if st != nil && strings.HasPrefix(st.NotReady, "no leader") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lone follower status %+v, want not ready: no leader", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 3 {
		if i != lone {
			if err := c.start(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.propose(setOp("/c", "3"))
	c.converge(seqBefore + 1)
}

// TestClusterConfigErrors: what a cluster node refuses to start with.
func TestClusterConfigErrors(t *testing.T) {
	peers := []Peer{{"a", "127.0.0.1:1"}, {"b", "127.0.0.1:2"}}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Dir: t.TempDir(), NodeID: "c", Peers: peers}, `node "c" is not in the peer list`},
		{Config{NodeID: "a", Peers: peers}, "needs a data directory"},
		{Config{Dir: t.TempDir(), NodeID: "a", Peers: append(peers, Peer{"a", "127.0.0.1:3"})}, `"a" listed twice`},
		{Config{Dir: t.TempDir(), NodeID: "a", Peers: append(peers, Peer{"c", "127.0.0.1:2"})}, `"127.0.0.1:2" listed twice`},
	} {
		tc.cfg.Store = &memStore{m: kvmap.New()}
		_, err := Open(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg.Peers, err, tc.want)
		}
	}
	// A single node's data directory is not a cluster node's.
	dir := t.TempDir()
	n, _ := open(t, dir)
	n.Close(context.Background())
	base := testkit.FreePorts(t)
	_, err := Open(context.Background(), Config{Dir: dir, NodeID: "a", Store: &memStore{m: kvmap.New()},
		Peers: []Peer{{"a", fmt.Sprintf("127.0.0.1:%d", base)}, {"b", fmt.Sprintf("127.0.0.1:%d", base+1)}}})
	if err == nil || !strings.Contains(err.Error(), `belongs to a raft configuration without node "a" (clonesrv=clonesrv)`) {
		t.Errorf("a single node's directory: %v", err)
	}
}

// crash stops node i the way kill -9 does, as far as one process can: no
// leadership hand-over, no final snapshot, no last write of the commit
// index; only the files are closed, so that the directory can be opened
// again.
func (c *testCluster) crash(i int) {
	n := c.nodes[i]
	c.nodes[i] = nil
	n.closeOnce.Do(func() {
		if n.stopSampler != nil {
			close(n.stopSampler)
			<-n.samplerDone
		}
		close(n.cs.stop)
		n.raft.Shutdown().Error()
		<-n.cs.done
		n.closeStores()
	})
}

// TestClusterCrashRestart: every node crashes; the one restarted first,
// alone, replays the entries it knew to be committed (it has no leader to
// hear it from); then the others come back, elect a leader (each still has
// the cluster configuration) and all agree.
func TestClusterCrashRestart(t *testing.T) {
	c := newTestCluster(t)
	c.startAll()
	for i := range 300 {
		c.propose(setOp(fmt.Sprintf("/k/%d", i%50), fmt.Sprint(i)))
	}
	c.converge(300)
	lone := (c.leader() + 1) % 3
	// The commit index is written about once a second: wait until the
	// lone node's covers everything.
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := c.nodes[lone].cs.tracker.stable.GetUint64(commitKey)
		if v >= c.nodes[lone].raft.AppliedIndex() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("commit index persisted %d, applied %d", v, c.nodes[lone].raft.AppliedIndex())
		}
		time.Sleep(20 * time.Millisecond)
	}
	before, _ := c.stores[lone].State()
	seqBefore := before.Seq
	for i := range 3 {
		c.crash(i)
	}
	st := &memStore{m: kvmap.New()}
	n, err := Open(context.Background(), Config{Dir: c.dirs[lone], NodeID: c.peers[lone].ID, Peers: c.peers, Store: st,
		SnapshotThreshold: 1 << 40, SnapshotInterval: time.Hour, CatchUpTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[lone], c.stores[lone] = n, st
	if s, _ := st.State(); s.Seq != seqBefore {
		t.Fatalf("lone node restarted after a crash serves seq %d, want %d", s.Seq, seqBefore)
	}
	for i := range 3 {
		if i != lone {
			if err := c.start(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.propose(setOp("/after", "x"))
	c.converge(seqBefore + 1)
}
