// Package metrics exposes a clonekv server to Prometheus: a collector that
// reads the server's counters (stats.Server, the socket monitor's peers,
// each handler's status) at scrape time, a handler (server.Config.Handlers)
// told every committed batch, and the HTTP endpoints /metrics, /healthz,
// /readyz and, on request, /debug/pprof.
//
// Everything is registered on a registry of its own (no global state), so
// several servers in one process, or tests, never collide.
package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/stats"
)

const namespace = "clonekv"

// Source is what the collector reads: *server.Server satisfies it.
type Source interface {
	Stats() *stats.Server
	Peers() []server.SocketPeers
	Handlers() []actors.HandlerStatus
}

// statsCollector turns a server's atomics into Prometheus samples when
// scraped: the values are the server's own, so a scrape is exact and costs
// the server nothing between scrapes.
type statsCollector struct {
	src Source

	accepted, published, rejected, expirations, hugz             *prometheus.Desc
	sequence, keys, backlog, inFlight                            *prometheus.Desc
	snapshots, snapshotKeys, snapshotSeconds, snapshotsAborted   *prometheus.Desc
	connections, connAccepted, handshakes, handshakesFailed      *prometheus.Desc
	hQueued, hLag, hHandled, hDropped, hPanics, hBusy            *prometheus.Desc
	streamsStalled, snapshotsWaiting, pinnedViewAge              *prometheus.Desc
	snapshotAborts, snapshotRefusals                             *prometheus.Desc
	connClosed                                                   *prometheus.Desc
	expiryBacklog, expiryIndexKeys, expiriesProposed, expiryRate *prometheus.Desc
	// The raft log (README "Durability").
	raftCommit, raftApplied, raftSnapIndex, raftSnapTime, raftLogEntries, raftDisk, notStored, logFailed *prometheus.Desc
	// The resume extension (README "Protocol additions").
	resumes, resumeMsgs, resumeBytes, resumeAheadWaits, windowSeqs, windowSecs, windowBytes *prometheus.Desc
	// Writes at any node (README "Running a cluster").
	forwarded, deduplicated, dedupeWindow, forwardQueue, forwardDropped, proposerQueue *prometheus.Desc
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
		hQueued:          d("handler_queued_batches", "Committed batches waiting for each handler (its queue holds server.Handler.Queue).", "handler"),
		hLag:             d("handler_lag_sequences", "How far each handler is behind: last sequence committed to it minus the last it finished.", "handler"),
		hHandled:         d("handler_handled_updates_total", "Updates each handler's OnCommit finished with (returned or panicked).", "handler"),
		hDropped:         d("handler_dropped_updates_total", "Updates dropped for each handler because its queue was full (or abandoned at shutdown).", "handler"),
		hPanics:          d("handler_panics_total", "OnCommit calls that panicked, per handler (recovered and logged).", "handler"),
		hBusy:            d("handler_busy_seconds", "How long each handler's OnCommit call in progress has run (0: idle).", "handler"),
		streamsStalled:   d("snapshot_streams_stalled", "Snapshot streams in flight whose client took nothing for a second or more (they do not hold a stream slot)."),
		snapshotsWaiting: d("snapshot_requests_waiting", "Snapshot requests queued for a stream slot."),
		pinnedViewAge:    d("snapshot_pinned_view_age_seconds", "Age of the oldest map version a snapshot stream holds (0: none)."),
		snapshotAborts:   d("snapshot_streams_aborted_total", "Snapshot streams ended before their KTHXBAI, by reason (stalled: no progress within the deadline; peer_gone; stopped).", "reason"),
		connClosed:       d("connections_closed_total", "Connections ended, per server socket and reason: closed (by the peer, or dropped by libzmq for a frame over the socket's size limit, missed heartbeats or a protocol error; libzmq 4.3 does not tell these apart).", "socket", "reason"),
		snapshotRefusals: d("snapshot_requests_refused_total", "Snapshot requests answered with a refused KTHXBAI, by reason (busy, too_many_requests).", "reason"),
		raftCommit:       d("raft_commit_index", "The raft log's commit index."),
		raftApplied:      d("raft_applied_index", "The last raft log index handed to the store (clonekv_sequence is the applied CHP sequence)."),
		raftSnapIndex:    d("raft_last_snapshot_index", "Raft log index of the newest FSM snapshot (0: none)."),
		raftSnapTime:     d("raft_last_snapshot_timestamp_seconds", "When this process last wrote an FSM snapshot, unix seconds (0: not yet)."),
		raftLogEntries:   d("raft_log_entries", "Entries in the raft log (the tail kept after the newest snapshot)."),
		raftDisk:         d("data_dir_bytes", "Disk space used by the data directory (0 with --memory)."),
		notStored:        d("updates_not_stored_total", "Updates dropped because the log could not store them."),
		logFailed:        d("log_failed", "1 once the log failed to store an update: the server no longer accepts updates."),
		resumes:          d("resumes_total", "Resume requests answered (KTHXBAI delivered), by result (delta: only the missed updates; full: a whole snapshot) and, for full, reason (history, compacted, ahead, bad_request, disabled).", "result", "reason"),
		resumeMsgs:       d("resume_messages_total", "KVSYNC messages sent in reply to resume requests, by result.", "result"),
		resumeBytes:      d("resume_bytes_total", "Bytes of the frames sent in reply to resume requests (KTHXBAI included), by result.", "result"),
		resumeAheadWaits: d("resume_ahead_waits_total", "Resume requests that asked for a sequence above this node's and waited (up to the cluster's --catch-up-timeout) for the node to reach it: a follower behind what the leader already published."),
		windowSeqs:       d("resume_window_sequences", "Updates held in the resume window: its span in sequences (a client that missed fewer resumes)."),
		windowSecs:       d("resume_window_seconds", "Age of the oldest update in the resume window (0: empty)."),
		windowBytes:      d("resume_window_bytes", "Bytes the resume window's updates take (frames plus a 32-byte index entry each); bounded by --resume-window."),
		expiryBacklog:    d("expiry_backlog", "Keys whose ttl has passed and whose expiry is not committed yet (proposed or waiting for the expiry rate), sampled every reaper tick."),
		expiryIndexKeys:  d("expiry_index_keys", "Keys with a ttl in the reaper's expiry index."),
		expiriesProposed: d("expiries_proposed_total", "Expiries the reaper proposed to the log (a key whose batch was dropped is proposed again)."),
		expiryRate:       d("expiry_rate_limit", "The bound on expiries proposed per second (--expiry-rate; 0: none)."),
		forwarded:        d("updates_forwarded_total", "Updates this node (a follower) handed to the leader's collector."),
		deduplicated:     d("updates_deduplicated_total", "Updates dropped because their UUID was applied (or proposed) already, within the dedupe window."),
		dedupeWindow:     d("dedupe_window_uuids", "UUIDs the dedupe window holds."),
		forwardQueue:     d("forward_queue", "Updates waiting in the forwarder for a leader (or for a slow one), in updates and bytes.", "unit"),
		forwardDropped:   d("forward_dropped_total", "Updates the forwarder gave up, by reason (queue_full, hops, stopped, send_failed).", "reason"),
		proposerQueue:    d("proposer_queue", "Updates waiting in the proposer for the log, in updates and bytes.", "unit"),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.accepted, c.published, c.rejected, c.expirations, c.hugz, c.sequence, c.keys, c.backlog, c.inFlight,
		c.snapshots, c.snapshotKeys, c.snapshotSeconds, c.snapshotsAborted,
		c.connections, c.connAccepted, c.handshakes, c.handshakesFailed,
		c.hQueued, c.hLag, c.hHandled, c.hDropped, c.hPanics, c.hBusy,
		c.streamsStalled, c.snapshotsWaiting, c.pinnedViewAge, c.snapshotAborts, c.snapshotRefusals, c.connClosed,
		c.raftCommit, c.raftApplied, c.raftSnapIndex, c.raftSnapTime, c.raftLogEntries, c.raftDisk, c.notStored, c.logFailed,
		c.resumes, c.resumeMsgs, c.resumeBytes, c.resumeAheadWaits, c.windowSeqs, c.windowSecs, c.windowBytes,
		c.expiryBacklog, c.expiryIndexKeys, c.expiriesProposed, c.expiryRate,
		c.forwarded, c.deduplicated, c.dedupeWindow, c.forwardQueue, c.forwardDropped, c.proposerQueue,
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
	// byReason emits one counter per reason counted in c.
	byReason := func(d *prometheus.Desc, c *stats.Counts) {
		for _, r := range c.All() {
			counter(d, r.Count, r.Reason)
		}
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
	gauge(c.streamsStalled, st.StreamsStalled.Load())
	gauge(c.snapshotsWaiting, st.SnapshotsWaiting.Load())
	ch <- prometheus.MustNewConstMetric(c.pinnedViewAge, prometheus.GaugeValue, float64(st.PinnedViewNanos.Load())/1e9)
	byReason(c.snapshotAborts, &st.SnapshotAborts)
	byReason(c.snapshotRefusals, &st.SnapshotRefusals)
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
	for _, r := range st.Resumes.All() {
		result, reason, _ := strings.Cut(r.Reason, ":")
		counter(c.resumes, r.Count, result, reason)
	}
	byReason(c.resumeMsgs, &st.ResumeMessages)
	byReason(c.resumeBytes, &st.ResumeBytes)
	counter(c.resumeAheadWaits, st.ResumeAheadWaits.Load())
	gauge(c.windowSeqs, st.ResumeWindowSequences.Load())
	var age float64
	if oldest := st.ResumeWindowOldestNanos.Load(); oldest != 0 {
		age = max(time.Since(time.Unix(0, oldest)).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.windowSecs, prometheus.GaugeValue, age)
	gauge(c.windowBytes, st.ResumeWindowBytes.Load())
	gauge(c.expiryBacklog, st.ExpiryBacklog.Load())
	gauge(c.expiryIndexKeys, st.ExpiryIndexKeys.Load())
	counter(c.expiriesProposed, st.ExpiriesProposed.Load())
	gauge(c.expiryRate, st.ExpiryRate.Load())
	counter(c.forwarded, st.UpdatesForwarded.Load())
	counter(c.deduplicated, st.UpdatesDeduplicated.Load())
	gauge(c.dedupeWindow, st.DedupeWindow.Load())
	gauge(c.forwardQueue, st.ForwardQueued.Load(), "updates")
	gauge(c.forwardQueue, st.ForwardQueuedBytes.Load(), "bytes")
	byReason(c.forwardDropped, &st.ForwardDropped)
	gauge(c.proposerQueue, st.ProposerQueued.Load(), "updates")
	gauge(c.proposerQueue, st.ProposerQueuedBytes.Load(), "bytes")
	for _, p := range c.src.Peers() {
		gauge(c.connections, p.Connected, p.Socket)
		counter(c.connAccepted, p.Accepted, p.Socket)
		counter(c.handshakes, p.Handshakes, p.Socket)
		counter(c.handshakesFailed, p.Failed, p.Socket)
		counter(c.connClosed, p.Closed, p.Socket, "closed")
	}
	for _, h := range c.src.Handlers() {
		gauge(c.hQueued, int64(h.Queued), h.Name)
		gauge(c.hLag, h.Lag, h.Name)
		counter(c.hHandled, h.Handled, h.Name)
		counter(c.hDropped, h.Dropped, h.Name)
		counter(c.hPanics, h.Panics, h.Name)
		ch <- prometheus.MustNewConstMetric(c.hBusy, prometheus.GaugeValue, h.Busy.Seconds(), h.Name)
	}
}
