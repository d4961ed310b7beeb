package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/internal/logging"
	"github.com/clonekv/clonekv/server"
)

// settle checks every value that the flag types alone do not, and builds
// the server configuration. Each error names the key and where its value
// came from (config.Effective.Invalid), so an operator can find it in the
// command line, the environment or the file.
func settle(eff *config.Effective, f *flags, stderr io.Writer) (*settled, error) {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, eff.Invalid(key, fmt.Errorf(format, args...)))
	}
	c := f.srv
	if c.Port < 0 || c.Port > 65533 {
		bad("port", "out of range 0..65533 (P+2 must be a port too)")
	}
	if c.Collector != server.CollectorPull && c.Collector != server.CollectorSub {
		bad("collector", "want %q or %q", server.CollectorPull, server.CollectorSub)
	}
	for key, d := range map[string]time.Duration{"hugz": f.hugz, "pub-linger": c.PubLinger} {
		if d < 0 {
			bad(key, "must not be negative")
		}
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", "must be positive")
	}
	if f.gcPercent < -1 || f.gcPercent == 0 {
		bad("gc-percent", "want a positive percentage, or -1 to turn the GC off")
	}
	if c.Log.SnapshotInterval <= 0 {
		bad("snapshot-interval", "must be positive")
	}
	if c.Log.SnapshotThreshold < 1 {
		bad("snapshot-threshold", "must be at least 1")
	}
	if f.memory {
		c.Log.DataDir = ""
		// The on-disk defaults would keep ~18,000 entries in RAM; left
		// unset, the log picks its memory defaults (raftlog.Config).
		def := func(key string) bool { o, ok := eff.Origins[key]; return !ok || o.Kind == "default" }
		if def("snapshot-interval") {
			c.Log.SnapshotInterval = 0
		}
		if def("snapshot-threshold") {
			c.Log.SnapshotThreshold = 0
		}
		if def("trailing-logs") {
			c.Log.TrailingLogs = 0
		}
	} else if c.Log.DataDir == "" {
		bad("data-dir", "must not be empty (use --memory to keep nothing on disk)")
	}
	if c.ReapInterval <= 0 {
		bad("reap-interval", "must be positive")
	}
	if c.ExpiryRate == 0 || c.ExpiryRate < -1 {
		bad("expiry-rate", "must be positive (or -1: no bound)")
	}
	if c.Limits.MaxKey < 1 || c.Limits.MaxKey > 1<<16-1 {
		bad("max-key", "out of range 1..65535")
	}
	if c.Limits.MaxBody < 1 {
		bad("max-body", "must be at least 1")
	}
	if c.Limits.MaxProps < 1 {
		bad("max-props", "must be at least 1")
	}
	if c.MaxKeys < 0 {
		bad("max-keys", "must not be negative (0: no bound)")
	}
	if c.MaxBytes < 0 {
		bad("max-bytes", "must not be negative (0: no bound)")
	}
	if c.ForwardQueue < 1 {
		bad("forward-queue", "must be positive")
	}
	if c.ForwardQueueBytes < 1 {
		bad("forward-queue-bytes", "must be positive")
	}
	if c.DedupeWindow < -1 {
		bad("dedupe-window", "want a positive count, 0 (the default: on in a cluster) or -1 (off)")
	}
	if c.DedupeAge <= 0 {
		bad("dedupe-age", "must be positive")
	}
	if c.RouterSndBuf < -1 || (c.RouterSndBuf > 0 && c.RouterSndBuf < 4096) {
		bad("router-sndbuf", "want at least 4096 bytes, or -1 (the kernel's)")
	}
	for key, n := range map[string]int{"pub-hwm": c.PubHWM, "router-hwm": c.RouterHWM, "collector-hwm": c.CollectorHWM} {
		if n < 0 {
			bad(key, "must not be negative")
		}
	}
	for key, n := range map[string]int{"max-streams": c.MaxStreams, "max-waiting": c.MaxWaiting, "max-waiting-per-peer": c.MaxWaitingPerPeer} {
		if n < 1 {
			bad(key, "must be positive")
		}
	}
	if c.SnapshotDeadline <= 0 {
		bad("snapshot-deadline", "must be positive")
	}
	if c.ResumeWindow < 0 {
		bad("resume-window", "must not be negative (0 turns resume off)")
	}
	if c.ZMTPHeartbeat < 0 {
		bad("zmtp-heartbeat", "must not be negative (0 turns ZMTP heartbeats off)")
	}
	if c.ZMTPHeartbeat > 0 && c.ZMTPHeartbeatTimeout < c.ZMTPHeartbeat {
		bad("zmtp-heartbeat-timeout", "must be at least the interval (%v)", c.ZMTPHeartbeat)
	}
	log, err := logging.New(stderr, f.logLevel, f.logFormat)
	if err != nil {
		if _, err := logging.New(stderr, f.logLevel, "text"); err != nil {
			bad("log-level", "want debug, info, warn or error")
		}
		if _, err := logging.New(stderr, "info", f.logFormat); err != nil {
			bad("log-format", "want text or json")
		}
	}
	if f.http != "" {
		if _, _, err := net.SplitHostPort(f.http); err != nil {
			bad("http", "want host:port, e.g. 127.0.0.1:9556")
		}
	} else if f.pprof {
		bad("pprof", "needs the --http listener")
	}
	if f.curveSecret != "" {
		kp, err := config.ReadSecretKeyFile(f.curveSecret)
		if err != nil {
			bad("curve-secret-key-file", "%v", err)
		}
		c.Curve = &server.CurveConfig{SecretKey: kp.Secret}
	}
	if f.curveAllow != "" {
		if f.curveSecret == "" {
			bad("curve-allow", "needs CURVE: set curve-secret-key-file too")
		} else if keys, err := config.ReadAllowDir(f.curveAllow); err != nil {
			bad("curve-allow", "%v", err)
		} else {
			c.Curve.AllowedClients = keys
		}
	}
	gw := settleGateway(f, &c, bad)
	settleCluster(eff, f, &c, bad)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c.Heartbeat = f.hugz
	if f.hugz == 0 {
		c.Heartbeat = -1
	}
	if c.ZMTPHeartbeat == 0 {
		c.ZMTPHeartbeat = -1
	}
	if c.ResumeWindow == 0 {
		c.ResumeWindow = -1
	}
	c.Logger = log
	if f.http != "" && !loopback(f.http) {
		log.Warn("the --http listener is not on loopback: /metrics, pprof and the gateway's /v1/ and /ui/ are open to the network", "http", f.http)
	}
	return &settled{srv: c, log: log, http: f.http, pprof: f.pprof, gcPercent: f.gcPercent, gw: gw}, nil
}

// loopback reports whether addr's host is a loopback address or localhost.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
