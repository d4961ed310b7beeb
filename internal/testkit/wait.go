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
	WaitForExplained(t, d, poll, what, cond, nil)
}

// WaitForExplained is WaitFor whose failure also says what state was
// reached: explain (if not nil) is called once, on the timeout.
func WaitForExplained(t testing.TB, d, poll time.Duration, what string, cond func() bool, explain func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			if explain != nil {
				t.Fatalf("timed out after %v waiting for %s: %s", d, what, explain())
			}
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(poll)
	}
}
