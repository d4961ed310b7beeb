// Command clonesrv runs a clonekv server: the ZeroMQ Guide's Clone pattern
// (Model Five) — snapshot ROUTER on P, publisher on P+1, collector on P+2.
//
// Every flag may also come from an environment variable (CLONEKV_PORT for
// --port, ...) or a TOML file (--config), with the precedence flag >
// environment > file > default; --print-config shows the result.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/gateway"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/metrics"
	"github.com/clonekv/clonekv/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// flags are clonesrv's settings; defineFlags binds them to a flag set.
type flags struct {
	srv                 server.Config
	hugz                time.Duration
	logLevel, logFormat string
	http                string
	pprof               bool
	curveSecret         string
	curveAllow          string
	configFile          string
	printConfig         bool
	version             bool
	gcPercent           int
	gateway             gatewayFlags
	memory              bool
	cluster             clusterFlags
}

func defineFlags(fs *flag.FlagSet, f *flags) {
	cfg := &f.srv
	fs.StringVar(&cfg.Bind, "bind", "*", "interface to listen on (\"*\" = all, as the seed; 127.0.0.1 for local only)")
	fs.IntVar(&cfg.Port, "port", server.DefaultPort, "base port P: snapshots on P, updates published on P+1, collected on P+2")
	fs.StringVar(&cfg.Collector, "collector", server.CollectorPull, "collector socket: pull (Model Five PUSH clients) or sub (RFC/Model Six PUB clients)")
	fs.DurationVar(&f.hugz, "hugz", time.Second, "heartbeat (HUGZ) interval; 0 turns heartbeats off")
	fs.DurationVar(&cfg.ReapInterval, "reap-interval", 100*time.Millisecond, "how often expired keys are deleted")
	fs.IntVar(&cfg.ExpiryRate, "expiry-rate", server.DefaultExpiryRate, "most keys expired per second, so that a mass expiry reaches subscribers no faster than they read (-1: no bound)")
	fs.IntVar(&cfg.Limits.MaxKey, "max-key", kvmsg.DefaultMaxKey, "largest key accepted, in bytes")
	fs.IntVar(&cfg.Limits.MaxBody, "max-body", kvmsg.DefaultMaxBody, "largest value accepted, in bytes")
	fs.IntVar(&cfg.Limits.MaxProps, "max-props", kvmsg.DefaultMaxProps, "largest properties frame accepted, in bytes")
	fs.IntVar(&cfg.MaxKeys, "max-keys", 0, "most keys stored; when full, updates adding a key are rejected (0: no bound)")
	fs.Int64Var(&cfg.MaxBytes, "max-bytes", 0, "most bytes stored (keys, uuids, properties, values); when full, updates adding bytes are rejected (0: no bound)")
	fs.IntVar(&cfg.PubHWM, "pub-hwm", 10000, "updates queued per subscriber before it starts losing them")
	fs.IntVar(&cfg.RouterHWM, "router-hwm", 1000, "snapshot messages queued per joining client (snapshots are paced, never dropped)")
	fs.IntVar(&cfg.RouterSndBuf, "router-sndbuf", server.DefaultRouterSndBuf, "kernel send buffer of each snapshot connection, in bytes: bounds what a joiner that stops reading absorbs before its stream stalls; -1: the kernel's (autotuned, better for joiners far away)")
	fs.IntVar(&cfg.CollectorHWM, "collector-hwm", 10000, "client updates queued at the collector before senders are pushed back")
	fs.IntVar(&cfg.ForwardQueue, "forward-queue", actors.DefaultForwardQueue, "cluster: updates a follower holds for the leader while none is known (beyond: dropped, counted)")
	fs.Int64Var(&cfg.ForwardQueueBytes, "forward-queue-bytes", actors.DefaultForwardQueueBytes, "cluster: bytes of updates a follower holds for the leader while none is known")
	fs.IntVar(&cfg.DedupeWindow, "dedupe-window", 0, fmt.Sprintf("recent update UUIDs remembered so that each is applied once (Model Six clients send every update to every server); 0: %d in a cluster, off for a single node; -1: off", actors.DefaultDedupeWindow))
	fs.DurationVar(&cfg.DedupeAge, "dedupe-age", actors.DefaultDedupeAge, "how long at most a UUID stays in the dedupe window")
	fs.IntVar(&cfg.MaxStreams, "max-streams", server.DefaultMaxStreams, "snapshot streams sent at once (a stream whose client reads nothing for 1s stops holding a slot)")
	fs.IntVar(&cfg.MaxWaiting, "max-waiting", server.DefaultMaxWaiting, "snapshot requests queued for a stream; past it requests get a KTHXBAI refused=busy")
	fs.IntVar(&cfg.MaxWaitingPerPeer, "max-waiting-per-peer", server.DefaultMaxWaitingPerPeer, "snapshot requests queued from one client; past it refused=too_many_requests")
	fs.DurationVar(&cfg.SnapshotDeadline, "snapshot-deadline", server.DefaultSnapshotDeadline, "end a snapshot stream whose client takes nothing for this long (KTHXBAI refused=stalled)")
	fs.Int64Var(&cfg.ResumeWindow, "resume-window", server.DefaultResumeWindow, "bytes of recent updates kept so that a reconnecting clonekv client gets only what it missed (resume); 0 turns resume off")
	fs.DurationVar(&cfg.ZMTPHeartbeat, "zmtp-heartbeat", server.DefaultZMTPHeartbeat, "ZMTP heartbeat (PING) interval on every socket; 0 (the default) leaves them off: a client that falls behind by the timeout is dropped too, and libzmq 4.3 is reported to abort some peers that reconnect after such a drop (README)")
	fs.DurationVar(&cfg.ZMTPHeartbeatTimeout, "zmtp-heartbeat-timeout", server.DefaultZMTPHeartbeatTimeout, "disconnect a peer from which nothing arrives this long after a PING (a vanished host, a stopped process)")
	fs.DurationVar(&cfg.PubLinger, "pub-linger", time.Second, "how long shutdown keeps flushing published updates")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "bound on the graceful stop after SIGINT/SIGTERM (drain, publish, flush); then stop at once. Keep systemd's TimeoutStopSec above it")
	fs.StringVar(&cfg.Log.DataDir, "data-dir", "./clonekv-data", "data directory: the raft log and snapshots of the map (created and bootstrapped when new; see README \"Durability\")")
	fs.BoolVar(&f.memory, "memory", false, "keep nothing on disk: the log lives in memory and a restart starts empty (the seed's semantics)")
	defineClusterFlags(fs, &f.cluster)
	fs.DurationVar(&cfg.Log.SnapshotInterval, "snapshot-interval", 30*time.Second, "how often to check whether to snapshot the map (so the log can be truncated); --memory: 250ms unless set")
	fs.Uint64Var(&cfg.Log.SnapshotThreshold, "snapshot-threshold", 8192, "log entries since the last snapshot that make the next check take one; --memory: 1024 unless set")
	fs.Uint64Var(&cfg.Log.TrailingLogs, "trailing-logs", 10240, "log entries kept behind a snapshot; --memory: 128 unless set")
	fs.IntVar(&f.gcPercent, "gc-percent", server.DefaultGCPercent, "Go GC target: heap growth allowed between collections, in percent of the live heap (Go's default is 100; lower uses less memory per key for a little more CPU; -1 turns the GC off)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.http, "http", "", "serve /metrics, /healthz, /readyz on this address (e.g. 127.0.0.1:9556); off when empty")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve /debug/pprof/ on the --http listener")
	defineGatewayFlags(fs, &f.gateway)
	fs.StringVar(&f.curveSecret, "curve-secret-key-file", "", "turn on CURVE encryption with the server key pair in this file (clonecli keygen writes one)")
	fs.StringVar(&f.curveAllow, "curve-allow", "", "admit only the clients whose public key files are in this directory (needs CURVE)")
	fs.StringVar(&f.configFile, "config", "", "TOML file of settings (keys are the flag names); env CLONEKV_CONFIG")
	fs.BoolVar(&f.printConfig, "print-config", false, "print the effective configuration, with where each value came from, and exit")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
}

// loader is how clonesrv reads its settings. CLONEKV_SERVER and the
// CLONEKV_CURVE_*_KEY_FILE pair are clonecli's (the server address and the
// client's CURVE keys), which an operator's shell may well export.
var loader = config.Loader{EnvPrefix: "CLONEKV_", FileFlag: "config", Meta: []string{"print-config", "version"},
	IgnoreEnv: []string{"CLONEKV_SERVER", "CLONEKV_CURVE_SERVER_KEY_FILE", "CLONEKV_CURVE_KEY_FILE"}}

func run(args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clonesrv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f flags
	defineFlags(fs, &f)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: clonesrv [flags]\n\nRuns a clonekv server (ZeroMQ Clone pattern, Model Five wire protocol).\n"+
			"Each flag may also be set as CLONEKV_<FLAG> (e.g. CLONEKV_PUB_HWM) or in the --config file;\n"+
			"precedence: flag > environment > file > default.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	eff, err := loader.Load(fs, args, environ)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if !errors.Is(err, config.ErrFlags) { // the flag package printed its own
			fmt.Fprintf(stderr, "clonesrv: %v\n", err)
		}
		return 2
	}
	if f.version {
		fmt.Fprintln(stdout, versionString())
		return 0
	}
	st, err := settle(eff, &f, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "clonesrv: %v\n", err)
		return 2
	}
	if f.printConfig {
		if err := eff.Print(stdout); err != nil {
			fmt.Fprintf(stderr, "clonesrv: %v\n", err)
			return 1
		}
		return 0
	}
	return serve(st)
}

// serve runs the server, and the HTTP endpoints when asked, until SIGINT
// or SIGTERM. The first signal stops it gracefully, within
// --shutdown-timeout; a second one exits at once.
func serve(st *settled) int {
	log := st.log
	debug.SetGCPercent(st.gcPercent)
	var m *metrics.Metrics
	if st.http != "" {
		m = metrics.New()
		st.srv.Handlers = append(st.srv.Handlers, m.Handler())
	}
	srv, err := server.New(st.srv)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	defer close(done)
	go watchSignals(log, st.srv.ShutdownTimeout, stop, done)
	if m != nil {
		hs, gw, err := startHTTP(ctx, st, srv, m)
		if err != nil {
			log.Error("cannot start", "err", err)
			srv.Close()
			return 1
		}
		if gw != nil {
			// Streams end on the stop signal; the client closes last.
			stopped := make(chan struct{})
			go func() { defer close(stopped); <-ctx.Done(); stopGateway(gw, log) }()
			defer func() { stop(); <-stopped; gw.Close() }()
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := hs.Shutdown(sctx); err != nil {
				log.Warn("http", "err", err)
			}
		}()
	}
	if err := srv.Run(ctx); err != nil {
		log.Error("server failed", "err", err)
		return 1
	}
	return 0
}

// watchSignals turns the first SIGINT or SIGTERM into stop (Run's graceful
// shutdown) and a second one into an immediate exit, until done is closed.
func watchSignals(log *slog.Logger, bound time.Duration, stop func(), done <-chan struct{}) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		log.Info("stopping: draining accepted updates (a second signal exits at once)", "signal", sig.String(), "shutdown_timeout", bound)
		stop()
	case <-done:
		return
	}
	select {
	case sig := <-sigs:
		log.Warn("second signal: exiting without draining", "signal", sig.String())
		os.Exit(1)
	case <-done:
	}
}

// startHTTP serves the metrics and probes (healthy once the sockets are
// bound, server.New succeeded; ready while the actors run and no stop
// signal has come) and, unless turned off, the HTTP gateway.
func startHTTP(ctx context.Context, st *settled, srv *server.Server, m *metrics.Metrics) (*metrics.HTTPServer, *gateway.Gateway, error) {
	if err := m.Watch(srv); err != nil {
		return nil, nil, err
	}
	var gw *gateway.Gateway
	// Before the gateway's /v1/: the cluster status is an operations
	// endpoint, as /metrics.
	mounts := []metrics.Mount{{Prefix: "/v1/cluster", Handler: clusterHandler(srv)}}
	if st.gw.on {
		var err error
		if gw, err = startGateway(st, srv); err != nil {
			return nil, nil, err
		}
		mounts = append(mounts, metrics.Mount{Prefix: "/v1/", Handler: gw.Handler()}, metrics.Mount{Prefix: "/ui", Handler: gw.Handler()})
	}
	h := metrics.HTTPHandler(metrics.HTTPConfig{
		Mounts:   mounts,
		Gatherer: m.Registry,
		Pprof:    st.pprof,
		Logger:   st.log,
		Ready: func() error {
			select {
			case <-ctx.Done():
				return errors.New("shutting down")
			default:
			}
			if srv.Stats().LogFailed.Load() {
				return errors.New("the log cannot store updates (see the log): not accepting updates")
			}
			select {
			case <-srv.Ready():
				return srv.ClusterReady()
			default:
				return errors.New("starting")
			}
		},
	})
	hs, err := metrics.Listen(st.http, h)
	if err != nil {
		if gw != nil {
			gw.Close()
		}
		return nil, nil, err
	}
	if gw != nil { // however the listener stops, its streams end first
		hs.RegisterOnShutdown(func() { stopGateway(gw, st.log) })
	}
	st.log.Info("http listening", "addr", hs.Addr(), "pprof", st.pprof)
	return hs, gw, nil
}

// settled is the configuration checked and turned into what serve needs.
type settled struct {
	srv       server.Config
	log       *slog.Logger
	http      string
	pprof     bool
	gcPercent int
	gw        gatewaySettings
}
