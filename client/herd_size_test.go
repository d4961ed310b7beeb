//go:build !soak

package client

// TestResumeHerd's size in make test (see herd_soak_test.go).
const (
	herdClients = 20
	herdKeys    = 10_000
)
