package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// ticker sends msg to an actor every interval from a goroutine it owns.
// It replaces protoactor's SendRepeatedly and SetReceiveTimeout, which race
// under -race at the pinned version.
type ticker struct {
	once sync.Once
	stop chan struct{}
	done chan struct{}
}

func startTicker(root *actor.RootContext, pid *actor.PID, interval time.Duration, msg func() any) *ticker {
	t := &ticker{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tk.C:
				root.Send(pid, msg())
			}
		}
	}()
	return t
}

// Stop ends the goroutine and waits for it. Safe on nil and twice.
func (t *ticker) Stop() {
	if t == nil {
		return
	}
	t.once.Do(func() { close(t.stop) })
	<-t.done
}
