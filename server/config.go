package server

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmsg"
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
	// Limits bound keys and bodies of client updates; zero fields take
	// kvmsg.DefaultLimits.
	Limits kvmsg.Limits

	// High-water marks, in messages. PubHWM bounds what queues for each
	// subscriber (default 10000; a subscriber that falls further behind loses
	// updates and re-joins); RouterHWM is the ROUTER's per-peer send queue
	// that paces snapshots (default 1000); CollectorHWM is the collector's
	// receive queue (default 10000).
	PubHWM       int
	RouterHWM    int
	CollectorHWM int
	// PubLinger is how long shutdown keeps flushing published updates to
	// subscribers; default 1s.
	PubLinger time.Duration

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

	// Handlers are extra actors that receive every *actors.Committed batch,
	// after the built-in ones. See README "Adding a handler".
	Handlers []Handler

	// Logger receives the server's logs; default slog.Default().
	Logger *slog.Logger
}

// Handler is an extension actor fed with committed updates.
type Handler struct {
	Name  string // actor name, unique within the server
	Props *actor.Props
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Bind == "" {
		out.Bind = "*"
	}
	if out.Port < 0 || out.Port > 65533 {
		return out, fmt.Errorf("port %d out of range (0..65533)", out.Port)
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
	if out.Limits.MaxKey <= 0 {
		out.Limits.MaxKey = kvmsg.DefaultMaxKey
	}
	if out.Limits.MaxBody <= 0 {
		out.Limits.MaxBody = kvmsg.DefaultMaxBody
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
	if out.CollectorHWM <= 0 {
		out.CollectorHWM = 10000
	}
	if out.PubLinger <= 0 {
		out.PubLinger = time.Second
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
		if h.Name == "" || h.Props == nil {
			return out, fmt.Errorf("handler %q: needs a name and props", h.Name)
		}
		if seen[h.Name] || reservedNames[h.Name] {
			return out, fmt.Errorf("handler name %q is already taken", h.Name)
		}
		seen[h.Name] = true
	}
	return out, nil
}

var reservedNames = map[string]bool{
	"store": true, "collector": true, "snapshot": true, "publisher": true, "reaper": true,
	"heartbeat": true, "pub-writer": true, "collector-reader": true, "router": true,
	"proposer": true,
}
