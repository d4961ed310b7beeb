//go:build race

package reliability

// raceEnabled scales loads down: the race detector slows the test's own
// clients (and an in-process server) five to ten times.
const raceEnabled = true
