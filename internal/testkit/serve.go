package testkit

import (
	"context"
	"testing"
	"time"
)

// Runner is a server that serves until its context ends: server.Server and
// baseline.Server both fit.
type Runner interface {
	Run(ctx context.Context) error
}

// readier is a Runner that says when it serves (server.Server does; the
// baseline server binds in New, so it serves as soon as Run starts).
type readier interface {
	Ready() <-chan struct{}
}

// readyWithin bounds the wait for a server to become ready.
const readyWithin = 10 * time.Second

// Running is a server started by Serve.
type Running struct {
	cancel     context.CancelFunc
	done       chan error // gets Run's result, then is closed
	stopWithin time.Duration
}

// Serve runs srv in its own goroutine until Stop is called or the test
// ends. If srv has a Ready channel, Serve waits for it (at most 10s) and
// fails the test if Run returns first. Stopping fails the test (Errorf) if
// Run returned an error or did not return within stopWithin of the cancel.
func Serve(t testing.TB, srv Runner, stopWithin time.Duration) *Running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{cancel: cancel, done: make(chan error, 1), stopWithin: stopWithin}
	go func() { r.done <- srv.Run(ctx); close(r.done) }()
	t.Cleanup(func() { r.Stop(t) })
	if rd, ok := srv.(readier); ok {
		select {
		case <-rd.Ready():
		case err := <-r.done:
			t.Fatalf("Run: %v", err)
		case <-time.After(readyWithin):
			t.Fatalf("server not ready in %v", readyWithin)
		}
	}
	return r
}

// Stop cancels the server's context and waits for Run to return. It is
// idempotent: later calls (such as the one at cleanup) return at once.
func (r *Running) Stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(r.stopWithin):
		t.Errorf("server did not stop in %v", r.stopWithin)
	}
}
