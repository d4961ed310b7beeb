package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// Config configures a Gateway. Only Endpoint is required.
type Config struct {
	// Endpoint is the server to follow and write to, "tcp://host:P" (its
	// snapshot port P; P+1 and P+2 are derived as for any client).
	Endpoint string
	// Curve, when the server runs CURVE: the gateway client's keys and the
	// server's public key. The server must admit the client's key.
	Curve *transport.CurveClient
	// History returns the server's history id, "" while unknown (clonesrv
	// passes its server's History); nil: always "".
	History func() string
	// Subscribers returns how many subscribers the server publishes to,
	// shown by /v1/status and the inspector; nil: not shown.
	Subscribers func() int

	// ReadOnly refuses PUT and DELETE (403).
	ReadOnly bool
	// Token, when not empty, is the bearer token PUT and DELETE need
	// ("Authorization: Bearer TOKEN"); reads never need it.
	Token string

	// MaxKey and MaxBody are the server's limits (default kvmsg's): a
	// write past them is refused here, before it reaches the server.
	MaxKey, MaxBody int
	// WriteTimeout bounds the wait for a write to be published (default 5s).
	WriteTimeout time.Duration
	// BodyTimeout bounds reading a request body (default 10s).
	BodyTimeout time.Duration
	// MaxItems caps the items of one GET (default 10000; ?limit= asks for
	// fewer, the default being 1000).
	MaxItems int

	// MaxWatchers bounds the SSE watchers open at once (default 256).
	MaxWatchers int
	// WatchQueue is each watcher's queue of updates not yet written
	// (default 8192); a watcher whose queue is full is cut off.
	WatchQueue int
	// ReplayUpdates and ReplayBytes bound the log of recent updates that
	// lets a reconnecting watcher resume (defaults 16384 and 16 MiB).
	ReplayUpdates, ReplayBytes int
	// Heartbeat is the interval of the SSE comment lines that keep idle
	// streams (and proxies) alive (default 15s).
	Heartbeat time.Duration
	// StallTimeout bounds each write to a watcher's connection (default
	// 10s): a peer that takes no data for that long is dropped.
	StallTimeout time.Duration

	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Endpoint == "" {
		return c, errors.New("http gateway: no server endpoint")
	}
	c.MaxKey = cmp.Or(c.MaxKey, kvmsg.DefaultMaxKey)
	c.MaxBody = cmp.Or(c.MaxBody, kvmsg.DefaultMaxBody)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, 5*time.Second)
	c.BodyTimeout = cmp.Or(c.BodyTimeout, 10*time.Second)
	c.MaxItems = cmp.Or(c.MaxItems, 10000)
	c.MaxWatchers = cmp.Or(c.MaxWatchers, 256)
	c.WatchQueue = cmp.Or(c.WatchQueue, 8192)
	c.ReplayUpdates = cmp.Or(c.ReplayUpdates, 16384)
	c.ReplayBytes = cmp.Or(c.ReplayBytes, 16<<20)
	c.Heartbeat = cmp.Or(c.Heartbeat, 15*time.Second)
	c.StallTimeout = cmp.Or(c.StallTimeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxKey < 1 || c.MaxBody < 1 || c.MaxItems < 1 || c.MaxWatchers < 1 || c.WatchQueue < 1 || c.ReplayUpdates < 1 || c.ReplayBytes < 1 {
		return c, errors.New("http gateway: limits must be positive")
	}
	return c, nil
}

// Gateway serves the HTTP API, the watch stream and the inspector. Create
// it with New; Shutdown ends its streams; Close releases its client.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	c      *client.Client
	hub    *hub
	mux    http.Handler
	cancel context.CancelFunc
	closed sync.Once
	// shutdown is closed by Shutdown: writes and new watchers are refused,
	// streams end with a final event.
	// mu orders stream starts (streams.Add) before Shutdown's Wait.
	mu       sync.Mutex
	shutdown chan struct{}
	streams  sync.WaitGroup
}

// New starts the gateway's client (it joins in the background: until its
// first snapshot the API answers 503) and the watch hub.
func New(cfg Config) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Options{
		Endpoints: []string{cfg.Endpoint}, Curve: cfg.Curve,
		// The hub must see every update (its replay log proves continuity),
		// and its one watcher must not lose events under a burst.
		Filter: client.FilterLocal, EventBuffer: 1 << 16,
		SubRcvHWM: 100000, PushSndHWM: 10000,
		Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("http gateway: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{cfg: cfg, log: cfg.Logger.With("component", "http-gateway"), c: c, cancel: cancel, shutdown: make(chan struct{})}
	g.hub = newHub(c, &cfg)
	g.mux = g.routes()
	go g.hub.run(ctx)
	return g, nil
}

// Handler serves /v1/ and /ui/ (mount it for both prefixes).
func (g *Gateway) Handler() http.Handler { return g.mux }

// Shutdown refuses new writes and watchers and ends every stream with a
// final event; it waits (until ctx ends) for the stream handlers to return.
// Call it before the HTTP server's own Shutdown, which would otherwise wait
// for the streams.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.beginShutdown()
	g.hub.closeAll("server shutting down")
	done := make(chan struct{})
	go func() { g.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("http gateway: streams still open: %w", ctx.Err())
	}
}

// Close stops the hub and the client. Call it after the HTTP server has
// stopped.
func (g *Gateway) Close() error {
	g.closed.Do(func() {
		g.beginShutdown()
		g.cancel()
		<-g.hub.done
		g.c.Close()
	})
	return nil
}

// Stats are the gateway's counters, for tests and /v1/status.
type Stats struct {
	Watchers int   // SSE watchers connected
	Resets   int64 // times the hub started a new stream from a snapshot
	Cuts     int64 // watchers cut off for not reading
	Client   client.Stats
}

// Stats returns the gateway's counters.
func (g *Gateway) Stats() Stats {
	_, n, _ := g.hub.state()
	return Stats{Watchers: n, Resets: g.hub.resets.Load(), Cuts: g.hub.cuts.Load(), Client: g.c.Stats()}
}

func (g *Gateway) history() string {
	if g.cfg.History == nil {
		return ""
	}
	return g.cfg.History()
}

func (g *Gateway) beginShutdown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closing() {
		close(g.shutdown)
	}
}

// startStream counts a stream in, unless the gateway is shutting down.
func (g *Gateway) startStream() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing() {
		return false
	}
	g.streams.Add(1)
	return true
}

func (g *Gateway) closing() bool {
	select {
	case <-g.shutdown:
		return true
	default:
		return false
	}
}
