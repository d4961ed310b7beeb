package raftlog

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// commitKey is where a cluster node keeps the commit index it last knew of,
// in raft's stable store (raft-wal's meta database).
var commitKey = []byte("clonekv_commit_index")

// commitTracker is the log store of a cluster node. It implements
// raft.CommitTrackingLogStore so that, with RestoreCommittedLogs, NewRaft
// applies the entries known to be committed before the node stopped: a
// follower that restarts while no leader is reachable serves its own
// committed state instead of its last snapshot.
//
// raft stages a commit index before each StoreLogs; once that call has
// stored (and synced) the entries, the index is known safe and becomes the
// durable candidate. It is written to the stable store lazily (flush, about
// once a second, and at close) rather than with every append: one more
// fsync per append would halve the log's rate. A crash loses at most the
// last second of progress of that figure, never correctness: a smaller
// index only means fewer entries replayed before the leader is heard from.
type commitTracker struct {
	raft.LogStore
	stable raft.StableStore

	mu     sync.Mutex
	staged uint64
	safe   atomic.Uint64 // stored with its entries: may be persisted
	saved  uint64        // last written to the stable store (flush's own)
	// start is what GetCommitIndex answered (the replay bound).
	start uint64
	limit uint64 // largest index GetCommitIndex may answer
}

var (
	_ raft.CommitTrackingLogStore = (*commitTracker)(nil)
	_ raft.MonotonicLogStore      = (*commitTracker)(nil)
)

func newCommitTracker(logs raft.LogStore, stable raft.StableStore) *commitTracker {
	t := &commitTracker{LogStore: logs, stable: stable, limit: math.MaxUint64}
	if v, err := stable.GetUint64(commitKey); err == nil {
		t.saved = v
		t.safe.Store(v)
	}
	return t
}

// StageCommitIndex implements raft.CommitTrackingLogStore.
func (t *commitTracker) StageCommitIndex(idx uint64) error {
	t.mu.Lock()
	t.staged = idx
	t.mu.Unlock()
	return nil
}

// StoreLogs stores entries; once they are stored, the index staged before
// them is safe.
func (t *commitTracker) StoreLogs(logs []*raft.Log) error {
	if err := t.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	t.mu.Lock()
	staged := t.staged
	t.mu.Unlock()
	if staged > t.safe.Load() {
		t.safe.Store(staged)
	}
	return nil
}

// StoreLog stores one entry (raft itself calls StoreLogs).
func (t *commitTracker) StoreLog(l *raft.Log) error { return t.StoreLogs([]*raft.Log{l}) }

// GetCommitIndex implements raft.CommitTrackingLogStore: the index last
// persisted, at most limit.
func (t *commitTracker) GetCommitIndex() (uint64, error) {
	v, err := t.stable.GetUint64(commitKey)
	if err != nil {
		v = 0 // none written yet (raft-wal answers "not found")
	}
	v = min(v, t.limit)
	if last, err := t.LogStore.LastIndex(); err == nil && v > last {
		v = last
	}
	t.start = v
	return v, nil
}

// IsMonotonic forwards the log store's answer (raft-wal's is true: after a
// snapshot install raft must then drop the whole log, not leave a gap).
func (t *commitTracker) IsMonotonic() bool {
	if m, ok := t.LogStore.(raft.MonotonicLogStore); ok {
		return m.IsMonotonic()
	}
	return false
}

// flush writes the safe commit index if it moved. applied is raft's
// applied index: entries raft handed to the FSM are committed and in the
// local log, so they are safe too (a follower often learns an entry is
// committed from a request that carries no new entries, hence no
// StoreLogs).
func (t *commitTracker) flush(applied uint64) error {
	v := max(t.safe.Load(), applied)
	if v <= t.saved {
		return nil
	}
	if err := t.stable.SetUint64(commitKey, v); err != nil {
		return err
	}
	t.saved = v
	return nil
}
