// Command clonesrv runs a clonekv server: the ZeroMQ Guide's Clone pattern
// (Model Five) — snapshot ROUTER on P, publisher on P+1, collector on P+2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"clonekv/internal/logging"
	"clonekv/kvmsg"
	"clonekv/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("clonesrv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       server.Config
		hugz      time.Duration
		logLevel  string
		logFormat string
	)
	fs.StringVar(&cfg.Bind, "bind", "*", "interface to listen on (\"*\" = all, as the seed; 127.0.0.1 for local only)")
	fs.IntVar(&cfg.Port, "port", server.DefaultPort, "base port P: snapshots on P, updates published on P+1, collected on P+2")
	fs.StringVar(&cfg.Collector, "collector", server.CollectorPull, "collector socket: pull (Model Five PUSH clients) or sub (RFC/Model Six PUB clients)")
	fs.DurationVar(&hugz, "hugz", time.Second, "heartbeat (HUGZ) interval; 0 turns heartbeats off")
	fs.DurationVar(&cfg.ReapInterval, "reap-interval", 100*time.Millisecond, "how often expired keys are deleted")
	fs.IntVar(&cfg.Limits.MaxKey, "max-key", kvmsg.DefaultMaxKey, "largest key accepted, in bytes")
	fs.IntVar(&cfg.Limits.MaxBody, "max-body", kvmsg.DefaultMaxBody, "largest value accepted, in bytes")
	fs.IntVar(&cfg.PubHWM, "pub-hwm", 10000, "updates queued per subscriber before it starts losing them")
	fs.IntVar(&cfg.RouterHWM, "router-hwm", 1000, "snapshot messages queued per joining client (snapshots are paced, never dropped)")
	fs.IntVar(&cfg.CollectorHWM, "collector-hwm", 10000, "client updates queued at the collector before senders are pushed back")
	fs.DurationVar(&cfg.PubLinger, "pub-linger", time.Second, "how long shutdown keeps flushing published updates")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: clonesrv [flags]\n\nRuns a clonekv server (ZeroMQ Clone pattern, Model Five wire protocol).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "clonesrv: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := logging.New(stderr, logLevel, logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "clonesrv: %v\n", err)
		return 2
	}
	cfg.Heartbeat = hugz
	if hugz == 0 {
		cfg.Heartbeat = -1
	}
	cfg.Logger = log

	srv, err := server.New(cfg)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		log.Error("server failed", "err", err)
		return 1
	}
	return 0
}
