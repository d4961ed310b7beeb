package testkit

import (
	"testing"
	"time"
)

// WaitFor checks cond every poll until it holds, and fails the test if it
// still does not hold after d: a bounded wait for something that happens
// asynchronously (a server's counter, a client's state).
func WaitFor(t testing.TB, d, poll time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(poll)
	}
}
