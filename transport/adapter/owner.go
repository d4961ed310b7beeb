package adapter

import "sync"

// owner runs the one goroutine that owns a socket and stops it: stop is
// closed to ask it to finish, done is closed when it has (and has closed its
// socket). Start is idempotent so an actor restart cannot start a second
// goroutine on the same socket.
type owner struct {
	once    sync.Once
	stopped sync.Once
	stop    chan struct{}
	done    chan struct{}
}

func newOwner() *owner {
	return &owner{stop: make(chan struct{}), done: make(chan struct{})}
}

func (o *owner) start(run func()) {
	o.once.Do(func() {
		go func() {
			defer close(o.done)
			run()
		}()
	})
}

// halt asks the goroutine to stop and waits for it. If it was never
// started, cleanup runs instead so the socket is still closed.
func (o *owner) halt(wake func(), cleanup func()) {
	o.stopped.Do(func() { close(o.stop) })
	started := true
	o.once.Do(func() { started = false })
	if !started {
		cleanup()
		return
	}
	if wake != nil {
		wake()
	}
	<-o.done
}
