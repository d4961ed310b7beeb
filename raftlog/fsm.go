package raftlog

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/window"
)

// Store is what the FSM feeds: the server's store actor, the one place
// where the map and the sequence change. Apply must not block for long (it
// runs on raft's FSM goroutine); State and Restore are synchronous.
type Store interface {
	// Apply hands over committed entries in log order.
	Apply(b *Batch)
	// State returns the state after everything handed to Apply so far,
	// in O(1) (a copy-on-write view).
	State() (State, error)
	// Restore replaces the whole state with a snapshot's.
	Restore(s Restored) error
}

// Batch is a run of committed entries, in log order.
type Batch struct {
	Entries []Applied
}

// Applied is one committed entry.
type Applied struct {
	Index uint64 // raft log index
	// Replay is true for entries that were already in the log when the node
	// opened: applied again to rebuild the state after a restart, they were
	// shown to clients before (or, after a crash, never acknowledged).
	Replay bool
	Entry
}

// State is the store's state at one point of the log, for a snapshot.
type State struct {
	Seq     int64
	History string
	Map     *kvmap.View
	// Window is the resume window up to Seq (nil: resume is off); the
	// snapshot keeps it, so that a restarted node still resumes.
	Window *window.View
}

// Restored is a state read back from a snapshot.
type Restored struct {
	Seq     int64
	History string
	Map     *kvmap.Map
	// Window is the snapshot's resume window, unbounded (nil: the
	// snapshot has none, as those written before it existed).
	Window *window.Window
}

// fsm is the raft.BatchingFSM. It decodes entries and hands them on; it
// keeps only what the node itself needs to know (the history id, the
// boundary between replay and new entries).
type fsm struct {
	store Store
	// replayTo is the last log index present when the node opened.
	replayTo uint64
	// volatile: the log is in memory and snapshots are discarded, so
	// Snapshot hands raft an empty one instead of writing the whole map.
	volatile bool

	mu        sync.Mutex
	history   string
	persisted time.Time // last snapshot written
	command   uint64    // index of the last clonekv entry applied
	// fatal is set (once, on the FSM goroutine) by an entry that does not
	// decode; onFatal, if set, hears of it.
	fatal   *DamageError
	onFatal func(error)
}

// DamageError is a log entry that does not decode.
type DamageError struct {
	Index uint64
	Err   error
}

func (e *DamageError) Error() string { return fmt.Sprintf("log entry %d: %v", e.Index, e.Err) }
func (e *DamageError) Unwrap() error { return e.Err }

func (f *fsm) damage() *DamageError {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fatal
}

func (f *fsm) lastCommand() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.command
}

func (f *fsm) lastPersisted() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.persisted
}

func (f *fsm) persistedNow() {
	f.mu.Lock()
	f.persisted = time.Now()
	f.mu.Unlock()
}

var _ raft.BatchingFSM = (*fsm)(nil)

// ApplyBatch implements raft.BatchingFSM. Configuration and no-op entries
// (raft's own) are skipped. A clonekv entry that does not decode (its
// checksum fails: the log file was damaged) stops the FSM: neither it nor
// anything after it reaches the store, Open refuses to start, and a running
// node reports it through onFatal.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	b := &Batch{Entries: make([]Applied, 0, len(logs))}
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		if f.fatal != nil {
			continue
		}
		e, err := Decode(l.Data)
		if err != nil {
			f.mu.Lock()
			f.fatal = &DamageError{Index: l.Index, Err: err}
			f.mu.Unlock()
			if f.onFatal != nil {
				f.onFatal(f.fatal)
			}
			continue
		}
		if e.Kind == KindHistory {
			f.mu.Lock()
			if f.history == "" {
				f.history = e.History
			}
			f.mu.Unlock()
		}
		b.Entries = append(b.Entries, Applied{Index: l.Index, Replay: l.Index <= f.replayTo, Entry: e})
		f.mu.Lock()
		f.command = l.Index
		f.mu.Unlock()
	}
	if len(b.Entries) > 0 {
		f.store.Apply(b)
	}
	return out
}

// Apply implements raft.FSM (unused with BatchingFSM, but required).
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// Snapshot asks the store for its state after everything handed to it:
// O(1). The view is written out later, in Persist, on raft's snapshot
// goroutine, while updates go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.volatile {
		return discarded{}, nil
	}
	st, err := f.store.State()
	if err != nil {
		return nil, fmt.Errorf("fsm snapshot: %w", err)
	}
	return &snapshot{state: st, written: f.persistedNow}, nil
}

// Restore replaces the store's state with the snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore fsm snapshot: %w", err)
	}
	if err := f.store.Restore(r); err != nil {
		return fmt.Errorf("restore fsm snapshot: %w", err)
	}
	f.mu.Lock()
	f.history = r.History
	f.mu.Unlock()
	return nil
}

func (f *fsm) historyID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.history
}
