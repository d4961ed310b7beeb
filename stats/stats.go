// Package stats holds the server's counters: plain atomics that the actors
// update and that anything (tests, the metrics endpoint, logs) may read at
// any time. It also rate-limits the log lines for rejected input, so that a
// flood of bad messages costs a counter increment each, not a log line each.
package stats

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Source names where rejected input arrived.
type Source string

const (
	SourceCollector Source = "collector" // KVSET on P+2
	SourceSnapshot  Source = "snapshot"  // requests on the ROUTER at P
)

// Server is the set of counters one server keeps. The zero value is ready.
type Server struct {
	UpdatesAccepted  atomic.Int64 // KVSETs that passed validation and got a sequence
	UpdatesPublished atomic.Int64 // KVPUBs written to the PUB socket (updates and expiries)
	Expirations      atomic.Int64 // keys deleted by the reaper
	HeartbeatsSent   atomic.Int64 // HUGZ written
	Sequence         atomic.Int64 // the store's current sequence
	Keys             atomic.Int64 // keys stored
	SnapshotsServed  atomic.Int64 // KTHXBAIs delivered
	SnapshotKeys     atomic.Int64 // KVSYNCs delivered
	SnapshotNanos    atomic.Int64 // total time from request to KTHXBAI handed to the socket
	SnapshotsAborted atomic.Int64 // streams abandoned because the peer went away
	StreamsInFlight  atomic.Int64 // snapshot streams being sent now
	StoreBacklog     atomic.Int64 // update batches handed to the store and not yet applied

	// The reaper (issue 11): ttl keys indexed, keys due whose expiry is not
	// committed yet (sampled each reaper tick), expiries proposed, and the
	// configured bound on expiries per second (0: none).
	ExpiryIndexKeys  atomic.Int64
	ExpiryBacklog    atomic.Int64
	ExpiriesProposed atomic.Int64
	ExpiryRate       atomic.Int64

	// Snapshot streams that give up, and joins turned away (issue 11).
	StreamsStalled   atomic.Int64 // streams in flight whose peer took nothing for a while (not counted against the stream limit)
	SnapshotsWaiting atomic.Int64 // requests queued for a stream slot
	PinnedViewNanos  atomic.Int64 // age of the oldest map view a stream holds (0: none), at the responder's last tick
	SnapshotAborts   Counts       // streams ended before their KTHXBAI, by reason (stalled, peer_gone, stopped)
	SnapshotRefusals Counts       // requests answered with a refused KTHXBAI, by reason (busy, too_many_requests)
	// The raft log (sampled about once a second by the raft node).
	RaftCommitIndex       atomic.Int64 // raft's commit index
	RaftAppliedIndex      atomic.Int64 // last index handed to the store
	RaftLastSnapshotIndex atomic.Int64 // last FSM snapshot's index (0: none)
	RaftLastSnapshotUnix  atomic.Int64 // when it was written, unix seconds (0: none this run)
	RaftLogEntries        atomic.Int64 // entries in the log (last - first index + 1)
	RaftDiskBytes         atomic.Int64 // bytes of the data directory (0 in memory)
	NotStored             atomic.Int64 // updates dropped because the log could not store them
	LogFailed             atomic.Bool  // the log failed: updates are no longer accepted
	// The resume extension (issue 14): the window of recent updates the
	// store keeps, and the resume requests answered.
	ResumeWindowSequences   atomic.Int64 // updates in the window (its span in sequences)
	ResumeWindowBytes       atomic.Int64 // bytes the window's updates take (frames + index)
	ResumeWindowBase        atomic.Int64 // the window holds every update after this sequence
	ResumeWindowOldestNanos atomic.Int64 // commit time of the oldest update in it, unix ns (0: empty)
	Resumes                 Counts       // resume replies delivered, by "delta" or "full:<reason>"
	ResumeMessages          Counts       // KVSYNCs in those replies, by "delta" or "full"
	ResumeBytes             Counts       // bytes of those replies' frames (KTHXBAI included), by "delta" or "full"
	ResumeAheadWaits        atomic.Int64 // resume requests that waited for this node to reach their since (a lagging cluster node)
	// Cluster is the raft cluster as this node sees it (nil: a single
	// node). See Cluster.
	Cluster atomic.Pointer[Cluster]

	// Writes at any node (README "Running a cluster"): what followers
	// forward to the leader, and what the dedupe window drops.
	UpdatesForwarded    atomic.Int64 // updates a follower handed to the leader's collector
	UpdatesDeduplicated atomic.Int64 // updates dropped because their UUID was applied (or proposed) already
	DedupeWindow        atomic.Int64 // UUIDs the dedupe window holds now
	ForwardQueued       atomic.Int64 // updates waiting in the forwarder (no leader known, or the leader slow)
	ForwardQueuedBytes  atomic.Int64 // their bytes
	ForwardDropped      Counts       // updates the forwarder gave up, by reason (queue_full, hops, stopped, send_failed)
	ProposerQueued      atomic.Int64 // updates waiting in the proposer for the log (bounded by the collector's credits)
	ProposerQueuedBytes atomic.Int64 // their bytes

	mu      sync.Mutex
	rejects map[rejectKey]*atomic.Int64
}

type rejectKey struct {
	source Source
	reason string
}

// Rejected counts one rejected message and returns the new count for its
// source and reason.
func (s *Server) Rejected(src Source, reason string) int64 {
	return s.rejectCounter(src, reason).Add(1)
}

func (s *Server) rejectCounter(src Source, reason string) *atomic.Int64 {
	k := rejectKey{src, reason}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rejects == nil {
		s.rejects = make(map[rejectKey]*atomic.Int64)
	}
	c := s.rejects[k]
	if c == nil {
		c = new(atomic.Int64)
		s.rejects[k] = c
	}
	return c
}

// RejectCount is one row of Rejects.
type RejectCount struct {
	Source Source
	Reason string
	Count  int64
}

// Rejects returns every reject counter, sorted by source and reason.
func (s *Server) Rejects() []RejectCount {
	s.mu.Lock()
	out := make([]RejectCount, 0, len(s.rejects))
	for k, c := range s.rejects {
		out = append(out, RejectCount{k.source, k.reason, c.Load()})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}

// RejectedTotal returns the number of rejected messages from src (all
// sources when src is empty).
func (s *Server) RejectedTotal(src Source) int64 {
	var n int64
	for _, r := range s.Rejects() {
		if src == "" || r.Source == src {
			n += r.Count
		}
	}
	return n
}

// RejectLog counts rejected input and logs it, at most Burst lines per
// Interval per source; the lines it holds back are summed into the next line
// it lets through. It is safe for concurrent use.
type RejectLog struct {
	Stats    *Server
	Logger   *slog.Logger
	Burst    int           // lines per interval; default 5
	Interval time.Duration // default 1s

	mu     sync.Mutex
	window map[Source]*logWindow
}

type logWindow struct {
	start      time.Time
	logged     int
	suppressed int64
}

// Reject counts a rejected message from src and logs why, rate-limited.
// attrs describe the message (peer, sizes); err says what was wrong.
func (l *RejectLog) Reject(src Source, reason string, err error, attrs ...any) {
	l.Stats.Rejected(src, reason)
	suppressed, ok := l.allow(src, time.Now())
	if !ok {
		return
	}
	args := append([]any{"source", string(src), "reason", reason, "err", err}, attrs...)
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	l.Logger.Warn("rejected input", args...)
}

func (l *RejectLog) allow(src Source, now time.Time) (suppressed int64, ok bool) {
	burst, interval := l.Burst, l.Interval
	if burst <= 0 {
		burst = 5
	}
	if interval <= 0 {
		interval = time.Second
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.window == nil {
		l.window = make(map[Source]*logWindow)
	}
	w := l.window[src]
	if w == nil {
		w = &logWindow{start: now}
		l.window[src] = w
	}
	if now.Sub(w.start) >= interval {
		w.start, w.logged = now, 0
	}
	if w.logged >= burst {
		w.suppressed++
		return 0, false
	}
	w.logged++
	suppressed, w.suppressed = w.suppressed, 0
	return suppressed, true
}

// Note logs an event from src at level, rate-limited like Reject, without
// counting it as rejected input (the caller keeps its own counter): a
// refused join, a dropped connection.
func (l *RejectLog) Note(src Source, level slog.Level, msg string, attrs ...any) {
	suppressed, ok := l.allow(src, time.Now())
	if !ok {
		return
	}
	args := append([]any{"source", string(src)}, attrs...)
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	l.Logger.Log(context.Background(), level, msg, args...)
}
