package raftlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/clonekv/clonekv/stats"
)

// Config configures a Node.
type Config struct {
	// Dir is the data directory; empty keeps the log and snapshots in
	// memory (clonesrv --memory): the same code path, nothing survives the
	// process.
	Dir string
	// NodeID names this server in the raft configuration; default
	// "clonesrv".
	NodeID string
	// SnapshotInterval is how often raft checks whether to take an FSM
	// snapshot, and SnapshotThreshold how many new log entries make it take
	// one (defaults 30s and 8192). TrailingLogs is how many entries stay
	// in the log behind a snapshot (default 10240), for a follower to
	// catch up from without a snapshot. In memory (Dir empty) the defaults
	// are 250ms, 1024 and 128: there a snapshot writes nothing and only
	// lets raft drop applied entries, so it is taken often.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotsRetained is how many snapshot files are kept (default 2).
	SnapshotsRetained int
	// SegmentSize is the raft-wal segment file size (default 64 MiB,
	// preallocated per segment).
	SegmentSize int
	// Store is what committed entries are handed to.
	Store Store
	// Stats, when set, receives raft's figures about once a second.
	Stats *stats.Server
	// Logger receives raft's warnings and errors (it is quiet below).
	Logger *slog.Logger

	// Peers, when not empty, makes the node one voter of a cluster (README
	// "Running a cluster"): every voter, this node (NodeID) included, with
	// its raft address, over which raft talks TCP. The first start of a
	// node with an empty data directory bootstraps this configuration
	// (every node bootstraps the same one); later starts rejoin from the
	// data directory. A cluster node needs a Dir.
	Peers []Peer
	// Cluster timers (defaults DefaultHeartbeatTimeout, ...). A follower
	// that hears nothing from the leader for HeartbeatTimeout (randomized
	// up to twice that) starts an election; LeaderLeaseTimeout (at most
	// HeartbeatTimeout) is how long a leader keeps leading without
	// hearing from a quorum. CommitTimeout bounds how long a follower may
	// wait to hear that an entry is committed.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
	// CatchUpTimeout bounds how long Open waits, in a cluster, for a leader
	// and to catch up with it (default DefaultCatchUpTimeout); after it the
	// node serves what it has.
	CatchUpTimeout time.Duration
	// MaxLag is the lag, in log entries, past which a cluster node reports
	// itself not ready (Stats.Cluster.NotReady; default DefaultMaxLag).
	MaxLag uint64
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.NodeID == "" {
		out.NodeID = "clonesrv"
	}
	interval, threshold, trailing := 30*time.Second, uint64(8192), uint64(10240)
	if out.Dir == "" {
		// Nothing in memory is ever restored or sent to a peer: keep just
		// enough log for raft's bookkeeping (README "Durability").
		interval, threshold, trailing = 250*time.Millisecond, 1024, 128
	}
	if out.SnapshotInterval <= 0 {
		out.SnapshotInterval = interval
	}
	if out.SnapshotThreshold == 0 {
		out.SnapshotThreshold = threshold
	}
	if out.TrailingLogs == 0 {
		out.TrailingLogs = trailing
	}
	if out.SnapshotsRetained <= 0 {
		out.SnapshotsRetained = 2
	}
	if out.SegmentSize <= 0 {
		out.SegmentSize = 64 << 20
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.CatchUpTimeout <= 0 {
		out.CatchUpTimeout = DefaultCatchUpTimeout
	}
	if out.MaxLag == 0 {
		out.MaxLag = DefaultMaxLag
	}
	return out
}

// Node is one raft node holding clonekv's history. Open starts it and
// returns once the node leads and its store holds every committed entry;
// Close stops it.
type Node struct {
	cfg   Config
	raft  *raft.Raft
	fsm   *fsm
	snaps raft.SnapshotStore
	logs  raft.LogStore
	// closers release the log and stable stores after raft has stopped.
	closers []func() error

	stopSampler chan struct{}
	samplerDone chan struct{}

	closeOnce sync.Once
	closeErr  error

	// cs is the cluster node's bookkeeping (nil: a single node).
	cs *clusterState
}

// Open opens (or creates and bootstraps) the history in cfg.Dir and starts
// the raft node. A data directory that cannot be read, or whose log or
// newest snapshot is damaged, is an error naming what it could not read:
// never an empty start. ctx bounds the wait for the node to lead.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	c := cfg.withDefaults()
	if c.Store == nil {
		return nil, errors.New("raftlog: no store")
	}
	if c.cluster() {
		if err := c.validateCluster(); err != nil {
			return nil, err
		}
		return openCluster(ctx, c)
	}
	n := &Node{cfg: c}
	hl := hclogger(c.Logger)
	st, err := openStores(c, hl)
	if err != nil {
		return nil, err
	}
	n.snaps, n.logs, n.closers = st.snaps, st.logs, st.closers
	fail := func(err error) (*Node, error) {
		n.closeStores()
		return nil, err
	}
	last, err := st.logs.LastIndex()
	if err != nil {
		return fail(fmt.Errorf("raft log %s: last index: %w", st.logDir, err))
	}
	n.fsm = &fsm{store: c.Store, replayTo: last, volatile: c.Dir == "", onFatal: func(err error) {
		c.Logger.Error("the log is damaged: nothing from this entry on is applied; no longer accepting updates", "dir", c.Dir, "err", err)
		if c.Stats != nil {
			c.Stats.LogFailed.Store(true)
		}
	}}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.Logger = hl
	// One voter: there is nobody to wait for, and the FSM only catches up
	// on restart once the node has elected itself (it does not replay the
	// log inside NewRaft), so short timers make a restart fast.
	rc.HeartbeatTimeout = 50 * time.Millisecond
	rc.ElectionTimeout = 50 * time.Millisecond
	rc.LeaderLeaseTimeout = 50 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.BatchApplyCh = true
	rc.SnapshotInterval = c.SnapshotInterval
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(fmt.Errorf("raft config: %w", err))
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(c.NodeID))

	has, err := raft.HasExistingState(st.logs, st.stable, st.snaps)
	if err != nil {
		return fail(fmt.Errorf("data directory %s: %w", c.Dir, err))
	}
	if !has {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}}
		if err := raft.BootstrapCluster(rc, st.logs, st.stable, st.snaps, trans, boot); err != nil {
			return fail(fmt.Errorf("bootstrap %s: %w", describe(c.Dir), err))
		}
	} else if err := dropLogBehind(st.logs, st.snaps, st.logDir); err != nil {
		return fail(err)
	}
	// raft falls back to an older snapshot when the newest does not load,
	// and the log after the older one may be gone: it sees only the newest,
	// and a failure to load it stops the start, naming the file.
	n.raft, err = newRaft(rc, n.fsm, st, newestOnly{st.snaps}, trans, c.Dir)
	if err != nil {
		if serr := checkNewestSnapshot(st.snaps, st.snapDir); serr != nil {
			err = serr
		}
		return fail(fmt.Errorf("start raft on %s: %w", describe(c.Dir), err))
	}
	if err := n.awaitLeader(ctx); err != nil {
		return nil, errors.Join(err, n.Close(context.Background()))
	}
	if c.Stats != nil {
		n.stopSampler, n.samplerDone = make(chan struct{}), make(chan struct{})
		go n.sampler(c.Stats, n.stopSampler, n.samplerDone)
	}
	return n, nil
}

// awaitLeader waits until the node leads, has applied every entry of its
// log, and has a history id (proposing one on a fresh log).
func (n *Node) awaitLeader(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for n.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return fmt.Errorf("raft node did not become leader: %w", context.Cause(ctx))
		case <-tick.C:
		}
	}
	if err := n.raft.Barrier(0).Error(); err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	if d := n.fsm.damage(); d != nil {
		return fmt.Errorf("damaged log in %s: %w (segment %s); refusing to start", layout(n.cfg.Dir).wal, d, segmentOf(n.cfg.Dir, d.Index))
	}
	if n.fsm.historyID() == "" {
		id, err := newHistoryID()
		if err != nil {
			return err
		}
		if err := n.raft.Apply(EncodeHistory(id), 0).Error(); err != nil {
			return fmt.Errorf("record history id: %w", err)
		}
	}
	// Everything is handed to the store; State waits until it is applied.
	if _, err := n.cfg.Store.State(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// Apply proposes one entry. It blocks only while raft's apply queue is full.
func (n *Node) Apply(data []byte) raft.ApplyFuture { return n.raft.Apply(data, 0) }

// History returns the history id (32 lowercase hex characters).
func (n *Node) History() string { return n.fsm.historyID() }

// Dir returns the data directory ("" in memory).
func (n *Node) Dir() string { return n.cfg.Dir }

// Snapshot takes an FSM snapshot now and waits for it to be written.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Close snapshots the final state (on disk), stops raft (every outstanding
// Apply then fails with raft.ErrRaftShutdown) and closes the stores. ctx bounds the wait for
// raft; the stores are closed only once raft has stopped.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		if n.stopSampler != nil {
			close(n.stopSampler)
			<-n.samplerDone
		}
		if n.raft == nil {
			n.closeStores()
			return
		}
		done := make(chan error, 1)
		go func() {
			if n.cs != nil {
				n.handOver()
			}
			// A snapshot of the final state makes the next start a
			// snapshot load with no log to replay.
			if n.cfg.Dir != "" && (n.cs != nil || n.raft.State() == raft.Leader) && n.fsm.lastCommand() > n.lastSnapshotIndex() {
				if err := n.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
					n.cfg.Logger.Warn("snapshot at shutdown", "err", err)
				}
			}
			if n.cs != nil {
				close(n.cs.stop)
			}
			err := n.raft.Shutdown().Error()
			if n.cs != nil {
				<-n.cs.done
				err = errors.Join(err, n.cs.tracker.flush(n.raft.AppliedIndex()))
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				n.closeErr = fmt.Errorf("raft shutdown: %w", err)
			}
			n.closeErr = errors.Join(n.closeErr, n.closeStores())
		case <-ctx.Done():
			// raft is still writing: leave the stores open rather than
			// close files under it; the process is about to exit.
			n.closeErr = fmt.Errorf("raft shutdown: %w", context.Cause(ctx))
		}
	})
	return n.closeErr
}

func (n *Node) closeStores() error {
	err := closeInReverse(n.closers)
	n.closers = nil
	return err
}

// closeInReverse runs closers last first (the stores' closers are in the
// order they were opened) and joins their errors.
func closeInReverse(closers []func() error) error {
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	return errors.Join(errs...)
}

// stores are the log, stable and snapshot stores of one node.
type stores struct {
	logs            raft.LogStore
	stable          raft.StableStore
	snaps           raft.SnapshotStore
	logDir, snapDir string
	closers         []func() error
}

func openStores(c Config, hl hclog.Logger) (*stores, error) {
	if c.Dir == "" {
		// A single volatile node never restores a snapshot nor sends one
		// to a peer: its snapshots only mark how far raft may drop the
		// log, so they are discarded (the FSM writes nothing into them)
		// rather than kept as copies of the whole map.
		mem := raft.NewInmemStore()
		return &stores{logs: mem, stable: mem, snaps: raft.NewDiscardSnapshotStore(), logDir: "(memory)", snapDir: "(memory)"}, nil
	}
	l := layout(c.Dir)
	if err := ensureDir(c.Dir); err != nil {
		return nil, err
	}
	unlock, err := lockDir(c.Dir)
	if err != nil {
		return nil, err
	}
	if err := ensureDir(l.wal); err != nil {
		return nil, errors.Join(err, unlock())
	}
	// raft-wal v0.4.0's Close did not close the bolt meta store it opens
	// itself (reopening the directory in the same process then hung on its
	// lock); v0.4.1's does. Give it one anyway, so that a failed Open
	// closes it too; closing it twice is a no-op.
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(l.wal, wal.WithMetaStore(meta), wal.WithSegmentSize(c.SegmentSize), wal.WithLogger(hl))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open raft log %s: %w", l.wal, err), meta.Close(), unlock())
	}
	st := &stores{logs: w, stable: w, logDir: l.wal, closers: []func() error{unlock, meta.Close, w.Close}}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(c.Dir, c.SnapshotsRetained, hl)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open snapshot store in %s: %w", c.Dir, err), w.Close(), meta.Close(), unlock())
	}
	st.snaps, st.snapDir = snaps, l.snapshots
	return st, nil
}

// checkNewestSnapshot reads the newest snapshot through (the file store
// checks its CRC). raft would fall back to an older snapshot, whose log
// tail may be gone, so a damaged newest snapshot stops the start instead.
func checkNewestSnapshot(snaps raft.SnapshotStore, dir string) error {
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots in %s: %w", dir, err)
	}
	if len(list) == 0 {
		return nil
	}
	_, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", snapshotFile(dir, list[0].ID), err)
	}
	if _, err := readSnapshot(rc); err != nil {
		rc.Close()
		return fmt.Errorf("snapshot %s: %w", snapshotFile(dir, list[0].ID), err)
	}
	return rc.Close()
}

// newestOnly is a snapshot store that lists only its newest snapshot.
type newestOnly struct{ raft.SnapshotStore }

func (s newestOnly) List() ([]*raft.SnapshotMeta, error) {
	list, err := s.SnapshotStore.List()
	if len(list) > 1 {
		list = list[:1]
	}
	return list, err
}

// dropLogBehind empties a log whose last entry is older than the newest
// snapshot (its torn tail was dropped, but the snapshot holds everything
// up to its index): raft continues after the snapshot's index, and the log
// store only appends contiguously.
func dropLogBehind(logs raft.LogStore, snaps raft.SnapshotStore, dir string) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	snapIndex := list[0].Index
	last, err := logs.LastIndex()
	if err != nil || last == 0 || last >= snapIndex {
		return err
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft log %s: %w", dir, err)
	}
	if err := logs.DeleteRange(first, last); err != nil {
		return fmt.Errorf("raft log %s: drop entries %d..%d behind snapshot %d: %w", dir, first, last, snapIndex, err)
	}
	return nil
}

func describe(dir string) string {
	if dir == "" {
		return "the in-memory log"
	}
	return "data directory " + dir
}

// hclogger routes raft's errors to slog. Below error raft is chatty (every
// election, every snapshot) and a one-voter cluster warns on every start
// that its heartbeat timed out before it elected itself.
func hclogger(l *slog.Logger) hclog.Logger {
	return hclog.FromStandardLogger(slog.NewLogLogger(l.Handler(), slog.LevelError),
		&hclog.LoggerOptions{Name: "raft", Level: hclog.Error})
}

func (n *Node) lastSnapshotIndex() uint64 {
	list, err := n.snaps.List()
	if err != nil || len(list) == 0 {
		return 0
	}
	return list[0].Index
}

// Barrier waits until everything proposed so far is applied.
func (n *Node) Barrier() error { return n.raft.Barrier(0).Error() }

// newRaft is raft.NewRaft, except that a log entry raft cannot decode
// (NewRaft panics on it while it scans the log for configurations, for
// example when bytes in the middle of a segment were overwritten) becomes
// an error naming the segment that holds it.
func newRaft(rc *raft.Config, fsm raft.FSM, st *stores, snaps raft.SnapshotStore, trans raft.Transport, dir string) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, unreadableLog(st.logs, dir, p)
		}
	}()
	return raft.NewRaft(rc, fsm, st.logs, st.stable, snaps, trans)
}

// unreadableLog finds the first entry of logs that does not decode and
// describes it, with the panic raft raised on it.
func unreadableLog(logs raft.LogStore, dir string, cause any) error {
	first, ferr := logs.FirstIndex()
	last, lerr := logs.LastIndex()
	if ferr == nil && lerr == nil {
		var l raft.Log
		for i := first; i <= last && i != 0; i++ {
			if err := logs.GetLog(i, &l); err != nil {
				return fmt.Errorf("damaged log in %s: entry %d: %w (segment %s); refusing to start", layout(dir).wal, i, err, segmentOf(dir, i))
			}
		}
	}
	return fmt.Errorf("damaged log in %s: %v; refusing to start", layout(dir).wal, cause)
}
