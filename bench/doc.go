// Package bench drives clonekv's server, the seed-design baseline
// (bench/baseline) and a bare PULL→PUB relay (bench/relay) with the same
// concurrent load, one after another in one run, so that every figure it
// reports is a ratio measured on the same machine at the same time.
//
// Each server under test runs as its own process (see Launcher): its CPU
// time and memory are then its own, read from /proc. Load generators,
// subscribers and joiners run as goroutines of the calling process, each
// ZeroMQ socket owned by exactly one goroutine.
//
// The cases are updates (zero-loss rate, unbounded throughput, latency
// percentiles), snapshot (1M-key joins, a subtree, memory per key), ttl
// (reaper cost per tick, expiry lateness), join-under-load and fanout. Run
// executes a Suite and returns a Report that renders as text tables, JSON
// and a self-contained HTML chart.
package bench
