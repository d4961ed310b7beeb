package actors_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/raft"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
)

// failingLog is a raft node whose disk is full: every Apply fails.
type failingLog struct{ applies atomic.Int64 }

type failed struct{ err error }

func (f failed) Error() error          { return f.err }
func (f failed) Index() uint64         { return 0 }
func (f failed) Response() interface{} { return nil }

var errDiskFull = errors.New("write wal: no space left on device")

func (l *failingLog) Apply([]byte) raft.ApplyFuture {
	l.applies.Add(1)
	return failed{errDiskFull}
}

// TestProposerStopsWhenTheLogFails: an update the log could not store is
// dropped (never published), its credit returned and counted; the server
// then accepts nothing more (LogFailed, which /readyz reports).
func TestProposerStopsWhenTheLogFails(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	st := &stats.Server{}
	log := &failingLog{}
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return actors.NewProposer(actors.ProposerConfig{Raft: log, Stats: st})
	}))
	var credits atomic.Int64
	batch := func() *actors.Updates {
		st.StoreBacklog.Add(1)
		return &actors.Updates{
			Items: []actors.Pending{{Msg: kvmsg.Msg{Key: []byte("/k"), Body: []byte("v")}}, {Msg: kvmsg.Msg{Key: []byte("/j"), Body: []byte("v")}}},
			Done:  func() { credits.Add(1) },
		}
	}
	sys.Root.Send(pid, batch())
	deadline := time.Now().Add(10 * time.Second)
	for !st.LogFailed.Load() || credits.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after a failed Apply: LogFailed %v, credits back %d", st.LogFailed.Load(), credits.Load())
		}
		time.Sleep(time.Millisecond)
	}
	sys.Root.Send(pid, batch())
	for credits.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the batch after the failure kept its credit")
		}
		time.Sleep(time.Millisecond)
	}
	if n := log.applies.Load(); n != 1 {
		t.Errorf("%d entries proposed, want 1 (nothing after the failure)", n)
	}
	if n := st.NotStored.Load(); n != 4 {
		t.Errorf("%d updates counted as not stored, want 4", n)
	}
	if n := st.RejectedTotal(stats.SourceCollector); n != 4 {
		t.Errorf("%d collector rejects, want 4 (reason %s)", n, actors.ReasonNotStored)
	}
}
