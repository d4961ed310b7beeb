package raftlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// openCluster is Open for a cluster node (cfg.Peers set, checked).
//
// Unlike a single node it does not wait to lead: NewRaft replays the
// entries the node knew to be committed when it stopped (commitTracker),
// then Open waits, at most CatchUpTimeout, for a leader and to apply what
// the leader had committed (awaitCatchUp). A follower restarted while the
// rest of the cluster is down thus serves its own committed state. The
// history id is proposed by the first leader of the empty log (watch);
// followers learn it from the log.
func openCluster(ctx context.Context, c Config) (*Node, error) {
	n := &Node{cfg: c}
	hl := clusterHclogger(c.Logger)
	st, err := openStores(c, hl)
	if err != nil {
		return nil, err
	}
	tracker := newCommitTracker(st.logs, st.stable)
	st.logs = tracker
	n.snaps, n.logs, n.closers = st.snaps, st.logs, st.closers
	var trans *watchedTransport
	fail := func(err error) (*Node, error) {
		if trans != nil {
			trans.Close()
		}
		n.closeStores()
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.Logger = hl
	c.clusterTimers(rc)
	rc.BatchApplyCh = true
	rc.SnapshotInterval = c.SnapshotInterval
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(fmt.Errorf("raft config: %w", err))
	}
	self := c.self()
	if trans, err = newWatchedTransport(self.Addr, hl); err != nil {
		return fail(err)
	}

	has, err := raft.HasExistingState(st.logs, st.stable, st.snaps)
	if err != nil {
		return fail(fmt.Errorf("data directory %s: %w", c.Dir, err))
	}
	if !has {
		// Every node bootstraps the same configuration: whichever is
		// elected first finds the others agreeing on it.
		boot := raft.Configuration{}
		for _, p := range c.Peers {
			boot.Servers = append(boot.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := raft.BootstrapCluster(rc, st.logs, st.stable, st.snaps, trans, boot); err != nil {
			return fail(fmt.Errorf("bootstrap %s: %w", describe(c.Dir), err))
		}
	} else if err := dropLogBehind(st.logs, st.snaps, st.logDir); err != nil {
		return fail(err)
	}
	tracker.limit = replayLimit(st.logs, st.snaps)
	replayTo, err := tracker.GetCommitIndex()
	if err != nil {
		return fail(fmt.Errorf("raft log %s: commit index: %w", st.logDir, err))
	}
	// Entries NewRaft replays were published before the restart; those
	// applied after it are news to this node's subscribers.
	n.fsm = &fsm{store: c.Store, replayTo: replayTo, onFatal: func(err error) {
		c.Logger.Error("the log is damaged: nothing from this entry on is applied; no longer accepting updates", "dir", c.Dir, "err", err)
		if c.Stats != nil {
			c.Stats.LogFailed.Store(true)
		}
	}}
	n.raft, err = newRaft(rc, n.fsm, st, newestOnly{st.snaps}, trans, c.Dir)
	if err != nil {
		if serr := checkNewestSnapshot(st.snaps, st.snapDir); serr != nil {
			err = serr
		}
		return fail(fmt.Errorf("start raft on %s: %w", describe(c.Dir), err))
	}
	if err := n.checkConfiguration(); err != nil {
		return nil, errors.Join(err, n.Close(context.Background()))
	}
	n.cs = &clusterState{trans: trans, tracker: tracker, stop: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go n.watch()
	if err := n.awaitCatchUp(ctx); err != nil {
		return nil, errors.Join(err, n.Close(context.Background()))
	}
	if c.Stats != nil {
		n.stopSampler, n.samplerDone = make(chan struct{}), make(chan struct{})
		go n.sampler(c.Stats, n.stopSampler, n.samplerDone)
	}
	return n, nil
}

// checkConfiguration warns when the configuration in the log is not the
// peer list: the log's is the one raft goes by. One without this node (a
// single node's data directory, another cluster's) is an error: the node
// could never take part.
func (n *Node) checkConfiguration() error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil
	}
	var have, want []string
	member := false
	for _, s := range f.Configuration().Servers {
		have = append(have, string(s.ID)+"="+string(s.Address))
		member = member || string(s.ID) == n.cfg.NodeID
	}
	if len(have) > 0 && !member {
		return fmt.Errorf("data directory %s belongs to a raft configuration without node %q (%s): a single node's history, or another cluster's; start this node on an empty data directory",
			n.cfg.Dir, n.cfg.NodeID, strings.Join(have, ","))
	}
	for _, p := range n.cfg.Peers {
		want = append(want, p.ID+"="+p.Addr)
	}
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		n.cfg.Logger.Warn("the data directory's cluster configuration differs from the peer list given; raft goes by the data directory's",
			"data_dir", strings.Join(have, ","), "given", strings.Join(want, ","))
	}
	return nil
}

// handOver makes a leader hand its leadership to a follower at shutdown,
// so that the cluster does not wait an election timeout for a new one.
func (n *Node) handOver() {
	if n.raft.State() != raft.Leader {
		return
	}
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		n.cfg.Logger.Debug("leadership transfer at shutdown", "err", err)
	}
}

// clusterHclogger is hclogger for a cluster node: raft's errors about
// unreachable peers (one every few hundred milliseconds per peer while a
// node is down) are dropped; the watcher logs each peer's and the
// leader's changes once instead.
func clusterHclogger(l *slog.Logger) hclog.Logger {
	h := dropChatter{l.Handler()}
	return hclog.FromStandardLogger(slog.NewLogLogger(h, slog.LevelError),
		&hclog.LoggerOptions{Name: "raft", Level: hclog.Error})
}

// chatter are raft's error lines about peers that do not answer.
var chatter = []string{
	"failed to heartbeat to", "failed to appendEntries to", "failed to make requestVote RPC",
	"failed to make requestPreVote RPC", "failed to pipeline appendEntries", "failed to start pipeline",
	"failed to decode incoming command", "failed to install snapshot",
}

type dropChatter struct{ h slog.Handler }

func (d dropChatter) Enabled(ctx context.Context, l slog.Level) bool { return d.h.Enabled(ctx, l) }
func (d dropChatter) Handle(ctx context.Context, r slog.Record) error {
	for _, c := range chatter {
		if strings.Contains(r.Message, c) {
			return nil
		}
	}
	return d.h.Handle(ctx, r)
}
func (d dropChatter) WithAttrs(a []slog.Attr) slog.Handler { return dropChatter{d.h.WithAttrs(a)} }
func (d dropChatter) WithGroup(g string) slog.Handler      { return dropChatter{d.h.WithGroup(g)} }
