package raftlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/clonekv/clonekv/stats"
)

// Peer is one voter of a cluster: its name (the raft server id) and its
// raft address HOST:PORT.
type Peer struct {
	ID   string
	Addr string
}

// Cluster timer defaults (Config.HeartbeatTimeout, ElectionTimeout,
// LeaderLeaseTimeout, CommitTimeout, CatchUpTimeout). A follower notices a
// dead leader within one to two heartbeat timeouts and the election takes
// about one more: about 1-1.5 s from a leader's death to a new leader, well
// under 3 s on a loaded machine, while a leader stalled for less than half
// a second (a GC, a slow fsync) keeps its place. raft's own defaults are 1 s.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
	// The leader tells followers its commit index at least this often when
	// nothing else is sent: a follower publishes an entry once it hears it
	// is committed.
	DefaultCommitTimeout = 5 * time.Millisecond
	// How long Open waits, in a cluster, for a leader and to catch up with
	// it before it lets the server serve what the node has.
	DefaultCatchUpTimeout = 5 * time.Second
	// DefaultMaxLag is the lag (in log entries) past which a follower says
	// it is not ready.
	DefaultMaxLag = 1000
)

// clusterMaxAppendEntries is raft's MaxAppendEntries in a cluster: the most
// entries per AppendEntries request, and the size of the batches NewRaft
// replays committed entries in (see replayLimit).
const clusterMaxAppendEntries = 256

// watchEvery is how often the cluster watcher samples raft (it also wakes
// on raft's leader and state observations).
const watchEvery = 100 * time.Millisecond

// Leader says who leads the log, as Node.OnLeadership reports it.
type Leader struct {
	// Self: this node leads, has applied every entry before its term, and
	// the history has its id: it may propose.
	Self bool
	// ID and Addr name the leader ("" while none is known).
	ID, Addr string
	Term     uint64
}

func (c *Config) cluster() bool { return len(c.Peers) > 0 }

// validateCluster checks the peer list of a cluster node.
func (c *Config) validateCluster() error {
	if c.Dir == "" {
		return errors.New("raftlog: a cluster node needs a data directory (its vote and log must survive a restart)")
	}
	ids, addrs := map[string]bool{}, map[string]bool{}
	self := false
	for _, p := range c.Peers {
		if p.ID == "" || p.Addr == "" {
			return fmt.Errorf("raftlog: peer %q at %q: needs a name and an address", p.ID, p.Addr)
		}
		if ids[p.ID] {
			return fmt.Errorf("raftlog: peer name %q listed twice", p.ID)
		}
		if addrs[p.Addr] {
			return fmt.Errorf("raftlog: peer address %q listed twice", p.Addr)
		}
		ids[p.ID], addrs[p.Addr] = true, true
		self = self || p.ID == c.NodeID
	}
	if !self {
		return fmt.Errorf("raftlog: node %q is not in the peer list", c.NodeID)
	}
	return nil
}

func (c *Config) self() Peer {
	for _, p := range c.Peers {
		if p.ID == c.NodeID {
			return p
		}
	}
	return Peer{}
}

// clusterTimers sets rc's timers for a cluster.
func (c *Config) clusterTimers(rc *raft.Config) {
	def := func(d, v time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return v
	}
	rc.HeartbeatTimeout = def(c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	rc.ElectionTimeout = def(c.ElectionTimeout, DefaultElectionTimeout)
	rc.LeaderLeaseTimeout = def(c.LeaderLeaseTimeout, min(DefaultLeaderLeaseTimeout, rc.HeartbeatTimeout))
	rc.CommitTimeout = def(c.CommitTimeout, DefaultCommitTimeout)
	rc.MaxAppendEntries = clusterMaxAppendEntries
	rc.RestoreCommittedLogs = true
}

// replayLimit bounds the committed entries NewRaft replays (RestoreCommittedLogs):
//
//   - NewRaft queues them for the FSM goroutine, which it starts only
//     afterwards, in batches of MaxAppendEntries on a channel 128 deep, and
//     would wait for ever on more;
//   - hashicorp/raft v1.8.0 reads the cluster configuration only from the
//     snapshot and from the entries after those it replays: a configuration
//     entry among the replayed ones would leave the node with none (it
//     could never start an election). The replay stops before the first
//     one after the snapshot. Each node snapshots once it has applied the
//     bootstrap entry (watch), so that this costs only the first restart.
//
// Entries past the limit are applied once the leader is heard from.
func replayLimit(logs raft.LogStore, snaps raft.SnapshotStore) uint64 {
	var base uint64
	if list, err := snaps.List(); err == nil && len(list) > 0 {
		base = list[0].Index
	}
	limit := base + 100*clusterMaxAppendEntries
	first, err1 := logs.FirstIndex()
	last, err2 := logs.LastIndex()
	if err1 != nil || err2 != nil || last == 0 {
		return limit
	}
	var l raft.Log
	for i := max(first, base+1); i <= min(last, limit); i++ {
		if err := logs.GetLog(i, &l); err != nil {
			return min(limit, i-1)
		}
		if l.Type == raft.LogConfiguration {
			return i - 1
		}
	}
	return limit
}

// clusterState is the node's cluster bookkeeping, written by the watcher.
type clusterState struct {
	trans   *watchedTransport
	tracker *commitTracker
	stop    chan struct{}
	done    chan struct{}
	wake    chan struct{}
	// notify is the leadership callback (Node.OnLeadership).
	notify atomic.Pointer[func(Leader)]
	// ready is the last Leader the watcher settled on (Self only once the
	// node is ready to propose).
	ready atomic.Pointer[Leader]
	// elections, leaderChanges count for stats.
	elections, leaderChanges atomic.Int64
}

// OnLeadership calls f with the current leadership now (on the caller's
// goroutine for a single node, on the node's watcher in a cluster) and,
// in a cluster, again on every change, on the watcher goroutine: f must not
// block. A single node leads its one-voter log for good: f hears
// Self once. Call it once.
func (n *Node) OnLeadership(f func(Leader)) {
	if n.cs == nil {
		f(Leader{Self: true, ID: n.cfg.NodeID, Term: n.raft.CurrentTerm()})
		return
	}
	n.cs.notify.Store(&f)
	select {
	case n.cs.wake <- struct{}{}:
	default:
	}
}

// Leadership returns the leadership as last settled (Self only once the
// node may propose).
func (n *Node) Leadership() Leader {
	if n.cs == nil {
		return Leader{Self: true, ID: n.cfg.NodeID, Term: n.raft.CurrentTerm()}
	}
	if l := n.cs.ready.Load(); l != nil {
		return *l
	}
	return Leader{}
}

// awaitCatchUp waits, in a cluster, until the node has the history id and
// either leads (ready to propose) or has applied what the leader had
// committed when the node first heard from it; at most CatchUpTimeout, after
// which the node serves what it has (readiness says it lags).
func (n *Node) awaitCatchUp(ctx context.Context) error {
	if d := n.fsm.damage(); d != nil {
		return fmt.Errorf("damaged log in %s: %w (segment %s); refusing to start", layout(n.cfg.Dir).wal, d, segmentOf(n.cfg.Dir, d.Index))
	}
	bound := time.NewTimer(n.cfg.CatchUpTimeout)
	defer bound.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var target uint64
	for {
		if n.fsm.historyID() != "" {
			if l := n.Leadership(); l.Self {
				break
			}
			if _, id := n.raft.LeaderWithID(); id != "" && id != raft.ServerID(n.cfg.NodeID) {
				if target == 0 {
					target = n.cs.trans.leaderCommit.Load()
				}
				if target > 0 && n.raft.AppliedIndex() >= target {
					break
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("raft node did not catch up: %w", context.Cause(ctx))
		case <-bound.C:
			n.cfg.Logger.Warn("no leader to catch up with yet: serving this node's committed state",
				"waited", n.cfg.CatchUpTimeout, "applied_index", n.raft.AppliedIndex(), "history", n.fsm.historyID())
			return n.storeCaughtUp()
		case <-tick.C:
		}
	}
	if d := n.fsm.damage(); d != nil {
		return fmt.Errorf("damaged log in %s: %w (segment %s); refusing to start", layout(n.cfg.Dir).wal, d, segmentOf(n.cfg.Dir, d.Index))
	}
	return n.storeCaughtUp()
}

// storeCaughtUp waits until the store has applied what was handed to it.
func (n *Node) storeCaughtUp() error {
	if _, err := n.cfg.Store.State(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// watch follows raft's leadership for the cluster node: it proposes the
// history id as the first leader of an empty log, tells OnLeadership's
// callback of every change, logs each change once, samples the figures
// into Stats.Cluster and persists the commit index.
func (n *Node) watch() {
	cs := n.cs
	defer close(cs.done)
	obsCh := make(chan raft.Observation, 64)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	w := &watcher{n: n, peerDown: map[string]bool{}}
	lastFlush := time.Now()
	for {
		w.step()
		if time.Since(lastFlush) >= time.Second {
			if err := cs.tracker.flush(n.raft.AppliedIndex()); err != nil {
				n.cfg.Logger.Warn("persist the raft commit index", "err", err)
			}
			lastFlush = time.Now()
		}
		select {
		case <-cs.stop:
			return
		case o := <-obsCh:
			if s, ok := o.Data.(raft.RaftState); ok && s == raft.Candidate {
				cs.elections.Add(1)
			}
		case <-cs.wake:
		case <-tick.C:
		}
	}
}

// watcher is the watch goroutine's state.
type watcher struct {
	n       *Node
	settled *Leader
	// told and toldFn are what the callback last heard, and which one.
	told     Leader
	toldFn   *func(Leader)
	notReady string
	warned   bool
	peerDown map[string]bool
	// snapshotted: the node has a snapshot holding the configuration.
	snapshotted bool
	// logged is the leadership last logged; noLeaderSince when the node
	// lost its leader (zero: it never had one), warnedNoLeader whether it
	// said so.
	logged         *Leader
	noLeaderSince  time.Time
	warnedNoLeader bool
}

func (w *watcher) step() {
	n, cs := w.n, w.n.cs
	cur := n.currentLeader()
	if cur.Self && (w.settled == nil || !w.settled.Self || w.settled.Term != cur.Term) {
		// Newly elected: apply everything before this term, name the
		// history on an empty log, only then say Self.
		if !n.prepareLeader() {
			cur = n.currentLeader()
			cur.Self = false
		}
	}
	if w.settled == nil || changed(*w.settled, cur) {
		if w.settled != nil && w.settled.ID != cur.ID && cur.ID != "" {
			cs.leaderChanges.Add(1)
		}
		w.logChange(cur)
		c := cur
		w.settled = &c
		cs.ready.Store(&c)
	}
	w.logNoLeader()
	if f := cs.notify.Load(); f != nil && (f != w.toldFn || changed(w.told, *w.settled)) {
		(*f)(*w.settled)
		w.toldFn, w.told = f, *w.settled
	}
	if !w.snapshotted && n.fsm.historyID() != "" {
		// See replayLimit: a snapshot holds the configuration.
		w.snapshotted = true
		if n.lastSnapshotIndex() == 0 {
			if err := n.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
				n.cfg.Logger.Debug("first snapshot", "err", err)
				w.snapshotted = false
			}
		}
	}
	st := n.clusterStatus(*w.settled)
	w.logReadiness(st)
	if n.cfg.Stats != nil {
		n.cfg.Stats.Cluster.Store(st)
	}
}

// changed: a different leader, or this node's readiness to propose, or a
// new term of a known leader (a term change with no leader is an election
// going on, not news).
func changed(a, b Leader) bool {
	return a.Self != b.Self || a.ID != b.ID || (b.ID != "" && a.Term != b.Term)
}

// currentLeader reads raft's view; Self means raft's state is Leader (not
// yet whether the node is ready to propose).
func (n *Node) currentLeader() Leader {
	addr, id := n.raft.LeaderWithID()
	l := Leader{ID: string(id), Addr: string(addr), Term: n.raft.CurrentTerm()}
	l.Self = n.raft.State() == raft.Leader && l.ID == n.cfg.NodeID
	if l.Self && l.ID == "" {
		l.ID = n.cfg.NodeID
	}
	return l
}

// prepareLeader makes a new leader ready to propose: every entry of earlier
// terms applied (Barrier), and the history named on an empty log (the
// first leader of a new cluster). False when leadership was lost meanwhile.
func (n *Node) prepareLeader() bool {
	if err := n.raft.Barrier(0).Error(); err != nil {
		if !errors.Is(err, raft.ErrRaftShutdown) {
			n.cfg.Logger.Debug("raft barrier as new leader", "err", err)
		}
		return false
	}
	if n.fsm.historyID() == "" {
		id, err := newHistoryID()
		if err != nil {
			n.cfg.Logger.Error("history id", "err", err)
			return false
		}
		if err := n.raft.Apply(EncodeHistory(id), 0).Error(); err != nil {
			n.cfg.Logger.Debug("record history id as new leader", "err", err)
			return false
		}
	}
	return n.raft.State() == raft.Leader
}

// logChange writes one line per change of leadership. A node that loses
// its leader warns only once it has had none for noLeaderGrace (logNoLeader):
// on a loaded machine a follower may miss a heartbeat timeout, become a
// candidate and hear from the same leader a moment later, which is no news.
func (w *watcher) logChange(l Leader) {
	log := w.n.cfg.Logger
	if l.ID == "" {
		if w.settled != nil && w.settled.ID != "" {
			w.noLeaderSince = time.Now()
		}
		return
	}
	if w.logged != nil && w.logged.ID == l.ID && w.logged.Self == l.Self && w.logged.Term == l.Term && !w.warnedNoLeader {
		return // back to the leader last logged
	}
	w.warnedNoLeader = false
	c := l
	w.logged = &c
	if l.Self {
		log.Info("raft: this node leads", "node", w.n.cfg.NodeID, "term", l.Term, "history", w.n.fsm.historyID())
	} else {
		log.Info("raft: following", "node", w.n.cfg.NodeID, "leader", l.ID, "term", l.Term)
	}
}

// noLeaderGrace is how long a node may be without a leader before it warns.
const noLeaderGrace = 1500 * time.Millisecond

// logNoLeader warns once when the node has had no leader for noLeaderGrace.
func (w *watcher) logNoLeader() {
	if w.settled == nil || w.settled.ID != "" || w.warnedNoLeader || w.noLeaderSince.IsZero() || time.Since(w.noLeaderSince) < noLeaderGrace {
		return
	}
	w.warnedNoLeader = true
	w.n.cfg.Logger.Warn("raft: no leader: not accepting updates until one is elected; serving the last committed state",
		"node", w.n.cfg.NodeID, "term", w.settled.Term, "since", w.noLeaderSince.Format(time.RFC3339Nano))
}

// logReadiness warns when the node stops being ready for a reason other
// than leadership (logged by logChange), and says when it is ready again;
// it also notes each peer the leader stops hearing from, and hears again.
func (w *watcher) logReadiness(st *stats.Cluster) {
	log := w.n.cfg.Logger
	if st.NotReady != w.notReady {
		switch {
		case st.NotReady == "":
			if w.warned {
				log.Info("raft: ready", "node", st.Node, "lag", st.Lag)
			}
			w.warned = false
		case st.Leader != "":
			log.Warn("raft: not ready: joins served here are stale", "node", st.Node, "reason", st.NotReady)
			w.warned = true
		}
		w.notReady = st.NotReady
	}
	if st.Role != "leader" {
		clear(w.peerDown)
		return
	}
	bound := 5 * w.n.heartbeat()
	for _, p := range st.Peers {
		down := !p.Known || st.Sampled.Sub(p.LastContact) > bound
		if down != w.peerDown[p.Name] {
			if down {
				log.Warn("raft: peer unreachable", "peer", p.Name, "addr", p.Addr)
			} else if _, seen := w.peerDown[p.Name]; seen {
				log.Info("raft: peer reachable", "peer", p.Name, "lag", p.Lag)
			}
		}
		w.peerDown[p.Name] = down
	}
}

func (n *Node) heartbeat() time.Duration {
	if n.cfg.HeartbeatTimeout > 0 {
		return n.cfg.HeartbeatTimeout
	}
	return DefaultHeartbeatTimeout
}

// clusterStatus samples the figures of stats.Cluster.
func (n *Node) clusterStatus(l Leader) *stats.Cluster {
	now := time.Now()
	st := &stats.Cluster{
		Node: n.cfg.NodeID, Role: strings.ToLower(n.raft.State().String()), Term: n.raft.CurrentTerm(),
		Leader: l.ID, LeaderAddr: l.Addr,
		CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex(), LastIndex: n.raft.LastIndex(),
		Elections: n.cs.elections.Load(), LeaderChanges: n.cs.leaderChanges.Load(), Sampled: now,
	}
	if st.Leader == "" {
		// raft knows the leader before this node settled on it.
		addr, id := n.raft.LeaderWithID()
		st.Leader, st.LeaderAddr = string(id), string(addr)
	}
	leading := st.Role == "leader"
	if leading {
		st.LeaderCommitIndex, st.LastContact = st.CommitIndex, now
	} else {
		st.LeaderCommitIndex, st.LastContact = max(n.cs.trans.leaderCommit.Load(), st.CommitIndex), n.raft.LastContact()
	}
	if st.LeaderCommitIndex > st.AppliedIndex {
		st.Lag = st.LeaderCommitIndex - st.AppliedIndex
	}
	for _, p := range n.cfg.Peers {
		if p.ID == n.cfg.NodeID {
			continue
		}
		cp := stats.ClusterPeer{Name: p.ID, Addr: p.Addr}
		if seen, ok := n.cs.trans.seen(p.ID); ok && leading {
			cp.Known, cp.LastIndex, cp.LastContact = true, seen.lastIndex, seen.at
			if st.LastIndex > seen.lastIndex {
				cp.Lag = st.LastIndex - seen.lastIndex
			}
		}
		st.Peers = append(st.Peers, cp)
	}
	switch {
	case st.Leader == "":
		st.NotReady = "no leader: not accepting updates (serving the last committed state)"
	case !leading && (st.LastContact.IsZero() || now.Sub(st.LastContact) > 5*n.heartbeat()):
		st.NotReady = fmt.Sprintf("no contact with the leader %s for %v", st.Leader, now.Sub(st.LastContact).Round(time.Millisecond))
	case st.Lag > n.cfg.MaxLag:
		st.NotReady = fmt.Sprintf("lagging: applied index %d, leader's commit index %d (%d entries behind, bound %d)",
			st.AppliedIndex, st.LeaderCommitIndex, st.Lag, n.cfg.MaxLag)
	case leading && !l.Self:
		st.NotReady = "elected leader, catching up before taking updates"
	}
	return st
}
