//go:build soak

package client

// TestResumeHerd's size with -tags soak (make soak): issue 14's 300
// clients, of a 100,000-key map.
const (
	herdClients = 300
	herdKeys    = 100_000
)
