package testkit

import (
	"testing"

	"github.com/clonekv/clonekv/internal/freeport"
)

// FreePorts returns a base port P such that P, P+1 and P+2 are free on
// 127.0.0.1 right now (below Linux's ephemeral range, as the server does),
// for a server that a test starts as a separate process or restarts on the
// same ports.
func FreePorts(t testing.TB) int {
	t.Helper()
	return PortRuns(t, 1, 3)[0]
}

// PortRuns returns count non-overlapping runs of width free consecutive
// ports (freeport.Runs), failing t when there are none.
func PortRuns(t testing.TB, count, width int) []int {
	t.Helper()
	runs, err := freeport.Runs(count, width)
	if err != nil {
		t.Fatal(err)
	}
	return runs
}
