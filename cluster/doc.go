// Package cluster holds the process tests of issue 13: three clonesrv
// nodes on one raft log on 127.0.0.1, with faults (kill -9, SIGSTOP and
// SIGCONT, restarts, a minority left alone) injected while writers stream
// updates through every node and a recorder on every node notes each KVPUB.
// A checker then holds the recordings and every node's final map to the
// issue's rules: one history, every sequence one update, nothing shown lost.
//
// It has no code but its tests; the harness is in harness_test.go and
// check_test.go. The longer randomized fault run is behind the soak build
// tag (make soak).
package cluster
