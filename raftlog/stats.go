package raftlog

import (
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"github.com/clonekv/clonekv/stats"
)

// sampleEvery is how often the node copies raft's figures into the
// server's stats.
const sampleEvery = time.Second

// sampler copies raft's indexes and the data directory's size into st
// until stop closes.
func (n *Node) sampler(st *stats.Server, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		n.sample(st)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (n *Node) sample(st *stats.Server) {
	st.RaftCommitIndex.Store(int64(n.raft.CommitIndex()))
	st.RaftAppliedIndex.Store(int64(n.raft.AppliedIndex()))
	if first, err := n.logs.FirstIndex(); err == nil {
		if last, err := n.logs.LastIndex(); err == nil && last >= first && last > 0 {
			st.RaftLogEntries.Store(int64(last - first + 1))
		}
	}
	if list, err := n.snaps.List(); err == nil && len(list) > 0 {
		st.RaftLastSnapshotIndex.Store(int64(list[0].Index))
	}
	if t := n.fsm.lastPersisted(); !t.IsZero() {
		st.RaftLastSnapshotUnix.Store(t.Unix())
	}
	if n.cfg.Dir != "" {
		st.RaftDiskBytes.Store(diskBytes(n.cfg.Dir))
	}
}

// diskBytes is the space the files under dir take on disk (allocated
// blocks: raft-wal preallocates its segments).
func diskBytes(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += sys.Blocks * 512
		} else {
			total += fi.Size()
		}
		return nil
	})
	return total
}
