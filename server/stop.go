package server

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// hurryBound is how long a hurried stop (Close, or a Shutdown whose ctx
// ended) still waits, in all, for actors to stop after the message they are
// handling and for handlers between two batches. Our actors never block, so
// this is a safety net, not a wait anyone should see.
const hurryBound = 2 * time.Second

// awaitStop asks the stopWatch to close done once pid has terminated.
type awaitStop struct {
	pid  *actor.PID
	done chan struct{}
}

// stopWatch tells when actors have terminated. It replaces protoactor's
// PoisonFuture/StopFuture, whose wait is fixed at 10 s: with a channel per
// actor, the server's stop waits as long as its own deadline says.
type stopWatch struct {
	waiting map[string][]chan struct{}
}

func newStopWatch() actor.Actor { return &stopWatch{waiting: map[string][]chan struct{}{}} }

func (w *stopWatch) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *awaitStop:
		// Watching an actor that has already gone yields Terminated at
		// once (protoactor answers a Watch that reaches a dead letter).
		w.waiting[m.pid.Id] = append(w.waiting[m.pid.Id], m.done)
		ctx.Watch(m.pid)
	case *actor.Terminated:
		for _, ch := range w.waiting[m.Who.Id] {
			close(ch)
		}
		delete(w.waiting, m.Who.Id)
	}
}

// stopper stops actors and waits for them: gracefully (Poison: after the
// messages already in their mailboxes) until hurry is closed, then at once
// (Stop: after the message in hand), giving up on any that has not
// terminated hurryBound after the hurry (they are listed in stuck).
type stopper struct {
	root  *actor.RootContext
	watch *actor.PID
	hurry <-chan struct{}
	until time.Time // set at the first wait after the hurry
	stuck []string
}

// stop stops pids (nil ones are skipped) and waits until all terminated.
func (st *stopper) stop(pids ...*actor.PID) {
	type waiting struct {
		pid  *actor.PID
		done chan struct{}
	}
	var ws []waiting
	for _, pid := range pids {
		if pid == nil {
			continue
		}
		w := waiting{pid, make(chan struct{})}
		if st.watch != nil {
			st.root.Send(st.watch, &awaitStop{pid: pid, done: w.done})
		}
		if st.hurried() {
			st.root.Stop(pid)
		} else {
			st.root.Poison(pid)
		}
		ws = append(ws, w)
	}
	for _, w := range ws {
		if st.watch == nil {
			st.stuck = append(st.stuck, w.pid.Id)
			continue
		}
		select {
		case <-w.done:
			continue
		case <-st.hurry:
		}
		st.root.Stop(w.pid) // a second stop of a stopping actor is harmless
		if st.until.IsZero() {
			st.until = time.Now().Add(hurryBound)
		}
		select {
		case <-w.done:
		case <-time.After(time.Until(st.until)):
			st.stuck = append(st.stuck, w.pid.Id)
		}
	}
}

func (st *stopper) hurried() bool {
	select {
	case <-st.hurry:
		return true
	default:
		return false
	}
}
