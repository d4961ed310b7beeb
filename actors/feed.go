package actors

import (
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/raftlog"
)

// StoreFeed is how raft's FSM reaches the store actor (it implements
// raftlog.Store): committed entries go to the store's mailbox from the FSM
// goroutine, in log order; State and Restore wait for the store's answer.
type StoreFeed struct {
	Root  *actor.RootContext
	Store *actor.PID
	// Timeout bounds State and Restore (default 30s): the store answers
	// at once, unless it has stopped.
	Timeout time.Duration
}

var _ raftlog.Store = (*StoreFeed)(nil)

var errStoreGone = errors.New("the store actor did not answer")

// Apply implements raftlog.Store.
func (f *StoreFeed) Apply(b *raftlog.Batch) { f.Root.Send(f.Store, b) }

// State implements raftlog.Store.
func (f *StoreFeed) State() (raftlog.State, error) {
	ch := make(chan raftlog.State, 1)
	f.Root.Send(f.Store, &StateRequest{Reply: ch})
	select {
	case st := <-ch:
		return st, nil
	case <-time.After(f.timeout()):
		return raftlog.State{}, errStoreGone
	}
}

// Restore implements raftlog.Store.
func (f *StoreFeed) Restore(r raftlog.Restored) error {
	ch := make(chan error, 1)
	f.Root.Send(f.Store, &RestoreRequest{State: r, Reply: ch})
	select {
	case err := <-ch:
		return err
	case <-time.After(f.timeout()):
		return errStoreGone
	}
}

func (f *StoreFeed) timeout() time.Duration {
	if f.Timeout <= 0 {
		return 30 * time.Second
	}
	return f.Timeout
}
