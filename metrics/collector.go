// Package metrics exposes a clonekv server to Prometheus: a collector that
// reads the server's counters (stats.Server, the socket monitor's peers) at
// scrape time, a handler actor fed with every committed batch through the
// store's extension point, and the HTTP endpoints /metrics, /healthz,
// /readyz and, on request, /debug/pprof.
//
// Everything is registered on a registry of its own (no global state), so
// several servers in one process, or tests, never collide.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/stats"
)

const namespace = "clonekv"

// Source is what the collector reads: *server.Server satisfies it.
type Source interface {
	Stats() *stats.Server
	Peers() []server.SocketPeers
}

// statsCollector turns a server's atomics into Prometheus samples when
// scraped: the values are the server's own, so a scrape is exact and costs
// the server nothing between scrapes.
type statsCollector struct {
	src Source

	accepted, published, rejected, expirations, hugz           *prometheus.Desc
	sequence, keys, backlog, inFlight                          *prometheus.Desc
	snapshots, snapshotKeys, snapshotSeconds, snapshotsAborted *prometheus.Desc
	connections, connAccepted, handshakes, handshakesFailed    *prometheus.Desc
	// The raft log (README "Durability").
	raftCommit, raftApplied, raftSnapIndex, raftSnapTime, raftLogEntries, raftDisk, notStored, logFailed *prometheus.Desc
}

func newStatsCollector(src Source) *statsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &statsCollector{
		src:              src,
		accepted:         d("updates_accepted_total", "Client updates (KVSET) that passed validation and got a sequence number."),
		published:        d("updates_published_total", "Updates (KVPUB, including ttl expiries) handed to the publisher socket."),
		rejected:         d("updates_rejected_total", "Input dropped, by where it arrived (collector, snapshot, auth) and why.", "source", "reason"),
		expirations:      d("expirations_total", "Keys deleted because their ttl passed."),
		hugz:             d("heartbeats_sent_total", "HUGZ heartbeats published."),
		sequence:         d("sequence", "The store's current sequence number."),
		keys:             d("keys", "Keys stored."),
		backlog:          d("store_mailbox_batches", "Update batches handed to the store actor and not yet applied (its mailbox depth)."),
		inFlight:         d("snapshot_streams_in_flight", "Snapshot streams being sent now."),
		snapshots:        d("snapshots_served_total", "Snapshots completed (KTHXBAI delivered)."),
		snapshotKeys:     d("snapshot_keys_total", "KVSYNC messages delivered in snapshots."),
		snapshotSeconds:  d("snapshot_duration_seconds", "Time from snapshot request to KTHXBAI handed to the socket (count = snapshots served)."),
		snapshotsAborted: d("snapshots_aborted_total", "Snapshot streams abandoned because the client went away."),
		connections:      d("connections", "TCP connections open now, per server socket (publisher = subscribers).", "socket"),
		connAccepted:     d("connections_accepted_total", "TCP connections accepted, per server socket.", "socket"),
		handshakes:       d("handshakes_total", "ZMTP handshakes completed, per server socket (with CURVE: clients admitted).", "socket"),
		handshakesFailed: d("handshakes_failed_total", "Handshakes failed, per server socket (with CURVE: refused clients).", "socket"),
		raftCommit:       d("raft_commit_index", "The raft log's commit index."),
		raftApplied:      d("raft_applied_index", "The last raft log index handed to the store (clonekv_sequence is the applied CHP sequence)."),
		raftSnapIndex:    d("raft_last_snapshot_index", "Raft log index of the newest FSM snapshot (0: none)."),
		raftSnapTime:     d("raft_last_snapshot_timestamp_seconds", "When this process last wrote an FSM snapshot, unix seconds (0: not yet)."),
		raftLogEntries:   d("raft_log_entries", "Entries in the raft log (the tail kept after the newest snapshot)."),
		raftDisk:         d("data_dir_bytes", "Disk space used by the data directory (0 with --memory)."),
		notStored:        d("updates_not_stored_total", "Updates dropped because the log could not store them."),
		logFailed:        d("log_failed", "1 once the log failed to store an update: the server no longer accepts updates."),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.accepted, c.published, c.rejected, c.expirations, c.hugz, c.sequence, c.keys, c.backlog, c.inFlight,
		c.snapshots, c.snapshotKeys, c.snapshotSeconds, c.snapshotsAborted,
		c.connections, c.connAccepted, c.handshakes, c.handshakesFailed,
		c.raftCommit, c.raftApplied, c.raftSnapIndex, c.raftSnapTime, c.raftLogEntries, c.raftDisk, c.notStored, c.logFailed,
	} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter(c.accepted, st.UpdatesAccepted.Load())
	counter(c.published, st.UpdatesPublished.Load())
	for _, r := range st.Rejects() {
		counter(c.rejected, r.Count, string(r.Source), r.Reason)
	}
	counter(c.expirations, st.Expirations.Load())
	counter(c.hugz, st.HeartbeatsSent.Load())
	gauge(c.sequence, st.Sequence.Load())
	gauge(c.keys, st.Keys.Load())
	gauge(c.backlog, st.StoreBacklog.Load())
	gauge(c.inFlight, st.StreamsInFlight.Load())
	served := st.SnapshotsServed.Load()
	counter(c.snapshots, served)
	counter(c.snapshotKeys, st.SnapshotKeys.Load())
	ch <- prometheus.MustNewConstSummary(c.snapshotSeconds, uint64(served), float64(st.SnapshotNanos.Load())/1e9, nil)
	counter(c.snapshotsAborted, st.SnapshotsAborted.Load())
	gauge(c.raftCommit, st.RaftCommitIndex.Load())
	gauge(c.raftApplied, st.RaftAppliedIndex.Load())
	gauge(c.raftSnapIndex, st.RaftLastSnapshotIndex.Load())
	gauge(c.raftSnapTime, st.RaftLastSnapshotUnix.Load())
	gauge(c.raftLogEntries, st.RaftLogEntries.Load())
	gauge(c.raftDisk, st.RaftDiskBytes.Load())
	counter(c.notStored, st.NotStored.Load())
	failed := int64(0)
	if st.LogFailed.Load() {
		failed = 1
	}
	gauge(c.logFailed, failed)
	for _, p := range c.src.Peers() {
		gauge(c.connections, p.Connected, p.Socket)
		counter(c.connAccepted, p.Accepted, p.Socket)
		counter(c.handshakes, p.Handshakes, p.Socket)
		counter(c.handshakesFailed, p.Failed, p.Socket)
	}
}
