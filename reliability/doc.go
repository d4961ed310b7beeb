// Package reliability is clonekv's reliability battery: tests that fail when
// the server stops keeping its promise under load, faults and bad input —
// it keeps serving and loses nothing it accepted.
//
// The package holds only tests and their helpers:
//
//   - flood_test.go: malformed messages on every port mixed into valid
//     traffic; valid clients see every update, in order, at near-clean
//     latency, and every malformed message is counted.
//   - slow_test.go: a subscriber that stops reading and a joiner that reads
//     its snapshot slowly; the server stays bounded and nobody else waits.
//   - many_test.go: thousands of concurrent clients, then connect/disconnect
//     cycles, with file descriptors and goroutines counted before and after.
//   - faults_test.go: kill -9 and SIGTERM of a real clonesrv process.
//   - soak_test.go (build tag soak, `make soak`): minutes of mixed load with
//     RSS and goroutines sampled.
//
// Loads are scaled down under the race detector (see race_on_test.go) so
// `make test` stays fast; the full sizes run without it.
package reliability
