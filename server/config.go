package server

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// DefaultPort is the base port P of the Guide's clone examples: the snapshot
// ROUTER listens on P, the publisher on P+1 and the collector on P+2.
const DefaultPort = 5556

// DefaultGCPercent is the Go GC target clonesrv runs with (its
// --gc-percent). The map's entries are small and many: at Go's default of
// 100 the heap may grow to twice the live map between collections; at 50 a
// million-key server's RSS is about 170 bytes per key instead of 210, for a
// GC cycle twice as often (each costs little next to libzmq's per-message
// work). Programs embedding the server choose their own.
const DefaultGCPercent = 50

// DefaultShutdownTimeout bounds Run's graceful shutdown when
// Config.ShutdownTimeout is not set: draining the pipeline takes
// milliseconds, the publisher's linger (default 1 s) and slow handlers the
// rest.
const DefaultShutdownTimeout = 10 * time.Second

// Snapshot stream defaults (Config.MaxStreams, MaxWaiting,
// MaxWaitingPerPeer, SnapshotDeadline).
const (
	// 512 streams: the socket serves them least attained first, so a herd
	// of joiners all make progress together instead of most of them
	// waiting, silent, for a slot (300 joiners of a 100,000-key map: none
	// silent for more than 2.4 s with 512, most silent for a minute with
	// 64). Each stream holds at most two 64 KiB chunks and a map view.
	DefaultMaxStreams        = 512
	DefaultMaxWaiting        = 4096
	DefaultMaxWaitingPerPeer = 16
	DefaultSnapshotDeadline  = 10 * time.Second
)

// DefaultRouterSndBuf is the snapshot connections' kernel send buffer
// (Config.RouterSndBuf). With the kernel's autotuned buffer (up to 4 MiB),
// each of 70 joiners that never read absorbed about 24,000 KVSYNCs of a
// 200,000-key map before its stream stalled, and a fresh joiner beside
// them took 3.4 s; with 256 KiB it took 2.4 s. A lone joiner's snapshot
// on loopback was no slower; 4 concurrent joiners of 100,000 keys were
// (790 ms against 615): README, the flag's row.
const DefaultRouterSndBuf = 256 << 10

// DefaultResumeWindow is the resume window's byte bound
// (Config.ResumeWindow): 64 MiB holds about 400,000 updates of 100-byte
// values (README "Protocol additions", resume).
const DefaultResumeWindow = 64 << 20

// DefaultExpiryRate bounds the keys expired per second (Config.ExpiryRate;
// see actors.DefaultExpiryRate for why).
const DefaultExpiryRate = actors.DefaultExpiryRate

// ZMTP heartbeat defaults (Config.ZMTPHeartbeat, ZMTPHeartbeatTimeout).
const (
	// Off by default. A PONG waits behind what a peer has not read, so a
	// reader that falls behind by the timeout is dropped too; and libzmq
	// 4.3 is reported to abort a connecting peer whose receive queue was
	// full when a heartbeat timeout dropped and reconnected it
	// (zeromq/libzmq#3937, #4767). The abort first blamed on that here
	// ("Resource temporarily unavailable (src/session_base.cpp:260)" in a
	// stalled test joiner) was a socket closed with linger 0
	// (transport.MinLinger); with the floor, 20 runs of the stalled-joiner
	// and slow-subscriber tests with heartbeats on (full-queue DEALERs and
	// SUBs dropped and reconnected) showed no abort. Turning the default
	// on is still a change in who gets dropped, so it is left off.
	DefaultZMTPHeartbeat        = 0
	DefaultZMTPHeartbeatTimeout = 30 * time.Second
)

// Collector socket types.
const (
	CollectorPull = "pull" // Model Five: clients PUSH their updates
	CollectorSub  = "sub"  // the RFC and Model Six: clients PUB their updates
)

// Config configures a Server. The zero value is a working server on a
// random free port triple on all interfaces with the defaults below.
type Config struct {
	// Bind is the interface to listen on: "*" (all, as the seed) when empty.
	Bind string
	// Port is the base port P (P, P+1, P+2 are used). 0 picks a free
	// consecutive triple, like ":0" for net.Listen; read it back with Port().
	Port int
	// Collector is CollectorPull (default) or CollectorSub.
	Collector string
	// Heartbeat is the HUGZ interval: 0 means 1s, negative turns HUGZ off.
	Heartbeat time.Duration
	// ReapInterval is how often expired keys are looked for; default 100ms,
	// so a key is deleted at most about that long after its ttl passes.
	ReapInterval time.Duration
	// ExpiryRate bounds the keys expired per second (default
	// actors.DefaultExpiryRate; negative: no bound beyond the credits), so
	// that a mass expiry reaches subscribers no faster than they read.
	ExpiryRate int
	// Limits bound keys, bodies and properties of client updates; zero
	// fields take kvmsg.DefaultLimits.
	Limits kvmsg.Limits
	// MaxKeys and MaxBytes bound what the store holds (0: no bound): keys,
	// and bytes of keys, UUIDs, properties and values. When full, an update
	// that would add a key or bytes is rejected (counted as max_keys or
	// max_bytes, logged); deletes and updates that fit still go through.
	MaxKeys  int
	MaxBytes int64

	// High-water marks, in messages. PubHWM bounds what queues for each
	// subscriber (default 10000; a subscriber that falls further behind loses
	// updates and re-joins); RouterHWM is the ROUTER's per-peer send queue
	// that paces snapshots (default 1000); CollectorHWM is the collector's
	// receive queue (default 10000).
	PubHWM       int
	RouterHWM    int
	CollectorHWM int
	// RouterSndBuf is the kernel send buffer of each snapshot connection,
	// in bytes (default DefaultRouterSndBuf; -1: the kernel's, autotuned
	// up to net.ipv4.tcp_wmem's maximum, 4 MiB on Debian). A joiner that
	// stops reading absorbs RouterHWM messages, this buffer (Linux doubles
	// it) and its own receive buffer before its stream stalls; every
	// stalled joiner costs the server that much encoding and copying
	// while a live one waits. The bound costs throughput only where a
	// snapshot's bandwidth-delay product exceeds it: 512 KiB in flight is
	// 10 MB/s at a 50 ms round trip.
	RouterSndBuf int
	// PubLinger is how long shutdown keeps flushing published updates to
	// subscribers; default 1s.
	PubLinger time.Duration
	// ShutdownTimeout bounds the graceful shutdown Run does when its
	// context ends (see Server.Shutdown); default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Snapshot streams. MaxStreams is how many stream at once (default
	// 512); later requests wait, at most MaxWaiting in all (default 4096)
	// and MaxWaitingPerPeer from one client (default 16), and past those
	// are answered at once with a KTHXBAI refused=busy or
	// refused=too_many_requests. SnapshotDeadline ends a stream whose
	// client takes nothing for that long (default 10s; KTHXBAI
	// refused=stalled) and frees the map version it held; a stream idle for
	// a second already stops holding one of the MaxStreams slots.
	MaxStreams        int
	MaxWaiting        int
	MaxWaitingPerPeer int
	SnapshotDeadline  time.Duration

	// ResumeWindow bounds, in bytes, the window of recent updates kept to
	// answer resume requests (default DefaultResumeWindow; negative: no
	// window, resume off: KTHXBAI and HUGZ do not offer it and resume
	// requests get a full snapshot, reason=disabled).
	ResumeWindow int64

	// ZMTPHeartbeat is the ZMTP heartbeat interval on all three sockets
	// (default off, see DefaultZMTPHeartbeat; zero or negative: off): a peer from which nothing
	// arrives for ZMTPHeartbeatTimeout after a PING (default 30s) is
	// disconnected, freeing its slot, its queues and its snapshot stream.
	// The timeout is also the TTL the PINGs ask the peer to apply to us. A
	// reader whose queue is full does not answer either, so the timeout
	// must exceed the longest pause of a legitimate slow reader.
	ZMTPHeartbeat        time.Duration
	ZMTPHeartbeatTimeout time.Duration

	// BatchMax is how many updates the collector reads per batch (default
	// 64) and Credits how many batches may be in the pipeline at once
	// (default 16; 64 with a data directory, where a batch holds its credit
	// while the log fsyncs it).
	BatchMax int
	Credits  int

	// Curve turns on CURVE encryption and, with an allow list, client
	// authentication on all three sockets (nil: off, as the Guide's
	// clients expect). See curve.go.
	Curve *CurveConfig

	// Log is where the history is kept (zero: in memory). See durable.go.
	Log LogConfig

	// Writes at any node of a cluster (README "Running a cluster"):
	// ForwardQueue and ForwardQueueBytes bound the updates a follower holds
	// while no leader is known (defaults actors.DefaultForwardQueue,
	// DefaultForwardQueueBytes); DedupeWindow and DedupeAge bound the
	// leader's window of recent UUIDs, each applied at most once
	// (DedupeWindow 0: actors.DefaultDedupeWindow in a cluster, off for a
	// single node, which gets no copies from other nodes; < 0: off;
	// DedupeAge default actors.DefaultDedupeAge).
	ForwardQueue      int
	ForwardQueueBytes int64
	DedupeWindow      int
	DedupeAge         time.Duration

	// Cluster, when set, makes the server one node of a raft cluster
	// (cluster.go): it needs a Log.DataDir, and Port must be 0 or this
	// node's own Port in the list (0 takes it).
	Cluster *ClusterConfig

	// Handlers are extensions told every committed batch, after the
	// built-in followers. See Handler and README "Adding a handler".
	Handlers []Handler

	// Logger receives the server's logs; default slog.Default().
	Logger *slog.Logger
}

// Handler registers an extension with the server. Handler.OnCommit is
// called with every committed batch, in order, on a goroutine of its own;
// the server puts up to Queue batches in front of it and, when they are
// all waiting, drops further batches for this handler alone (counted, logged,
// and told to the handler in Batch.Dropped), so a slow or stuck handler
// never holds up the store or the subscribers. See actors.Handler.
type Handler struct {
	// Name names the handler in logs and metrics; unique within a server.
	Name    string
	Handler actors.Handler
	// Queue is how many batches may wait for the handler (default
	// actors.DefaultHandlerQueue).
	Queue int
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Bind == "" {
		out.Bind = "*"
	}
	if out.Port < 0 || out.Port > 65533 {
		return out, fmt.Errorf("port %d out of range (0..65533)", out.Port)
	}
	if out.Cluster != nil {
		if err := out.Cluster.Validate(); err != nil {
			return out, err
		}
		self, _ := out.Cluster.self()
		switch {
		case out.Port == 0:
			out.Port = self.Port
		case out.Port != self.Port:
			return out, fmt.Errorf("port %d: node %q listens on %d in the cluster list", out.Port, self.Name, self.Port)
		}
		if out.Log.DataDir == "" {
			return out, fmt.Errorf("cluster node %q needs a data directory (its vote and log must survive a restart)", self.Name)
		}
	}
	switch out.Collector {
	case "":
		out.Collector = CollectorPull
	case CollectorPull, CollectorSub:
	default:
		return out, fmt.Errorf("collector %q: want %q or %q", out.Collector, CollectorPull, CollectorSub)
	}
	if out.Heartbeat == 0 {
		out.Heartbeat = time.Second
	}
	if out.ReapInterval <= 0 {
		out.ReapInterval = 100 * time.Millisecond
	}
	if out.ExpiryRate == 0 {
		out.ExpiryRate = actors.DefaultExpiryRate
	}
	if out.Limits.MaxKey <= 0 {
		out.Limits.MaxKey = kvmsg.DefaultMaxKey
	}
	if out.Limits.MaxBody <= 0 {
		out.Limits.MaxBody = kvmsg.DefaultMaxBody
	}
	if out.Limits.MaxProps <= 0 {
		out.Limits.MaxProps = kvmsg.DefaultMaxProps
	}
	if out.MaxKeys < 0 || out.MaxBytes < 0 {
		return out, fmt.Errorf("max keys %d, max bytes %d: want 0 (no bound) or more", out.MaxKeys, out.MaxBytes)
	}
	if out.Limits.MaxKey > 1<<16-1 {
		return out, fmt.Errorf("key limit %d too large (max 65535)", out.Limits.MaxKey)
	}
	if out.PubHWM <= 0 {
		out.PubHWM = 10000
	}
	if out.RouterHWM <= 0 {
		out.RouterHWM = 1000
	}
	switch {
	case out.RouterSndBuf == 0:
		out.RouterSndBuf = DefaultRouterSndBuf
	case out.RouterSndBuf < 0:
		out.RouterSndBuf = 0 // the kernel's
	}
	if out.CollectorHWM <= 0 {
		out.CollectorHWM = 10000
	}
	if out.PubLinger <= 0 {
		out.PubLinger = time.Second
	}
	if out.ShutdownTimeout <= 0 {
		out.ShutdownTimeout = DefaultShutdownTimeout
	}
	if out.MaxStreams <= 0 {
		out.MaxStreams = DefaultMaxStreams
	}
	if out.MaxWaiting <= 0 {
		out.MaxWaiting = DefaultMaxWaiting
	}
	if out.MaxWaitingPerPeer <= 0 {
		out.MaxWaitingPerPeer = DefaultMaxWaitingPerPeer
	}
	if out.SnapshotDeadline <= 0 {
		out.SnapshotDeadline = DefaultSnapshotDeadline
	}
	if out.ResumeWindow == 0 {
		out.ResumeWindow = DefaultResumeWindow
	}
	if out.ZMTPHeartbeat == 0 {
		out.ZMTPHeartbeat = DefaultZMTPHeartbeat
	}
	if out.ZMTPHeartbeatTimeout <= 0 {
		out.ZMTPHeartbeatTimeout = max(DefaultZMTPHeartbeatTimeout, 3*out.ZMTPHeartbeat)
	}
	if out.ZMTPHeartbeat > 0 && out.ZMTPHeartbeatTimeout < out.ZMTPHeartbeat {
		return out, fmt.Errorf("zmtp heartbeat timeout %v is shorter than the interval %v", out.ZMTPHeartbeatTimeout, out.ZMTPHeartbeat)
	}
	if out.BatchMax <= 0 {
		out.BatchMax = 64
	}
	if out.Credits <= 0 {
		out.Credits = 16
		if out.Log.DataDir != "" {
			// A batch holds its credit while the log fsyncs it: at a few
			// updates per batch, 16 would cap the rate near 16 per fsync.
			out.Credits = 64
		}
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if err := out.Curve.validate(); err != nil {
		return out, err
	}
	seen := map[string]bool{}
	for _, h := range out.Handlers {
		if h.Name == "" || h.Handler == nil {
			return out, fmt.Errorf("handler %q: needs a name and a Handler", h.Name)
		}
		if seen[h.Name] {
			return out, fmt.Errorf("handler name %q is taken twice", h.Name)
		}
		seen[h.Name] = true
	}
	return out, nil
}

// maxCollectorFrame is the collector socket's ZMQ_MAXMSGSIZE: a frame far
// beyond the body and properties limits disconnects its sender (libzmq
// reads a frame's announced size first and would buffer it whole); anything
// up to it is received, then rejected and counted by the collector.
func (c *Config) maxCollectorFrame() int64 {
	return int64(4*max(c.Limits.MaxBody, c.Limits.MaxProps) + 1<<20)
}

// heartbeat is the ZMTP heartbeat option of the server's sockets (nil: off).
func (c *Config) heartbeat() *transport.Heartbeat {
	return transport.HeartbeatEvery(c.ZMTPHeartbeat, c.ZMTPHeartbeatTimeout)
}
