// Command clonebench benchmarks clonekv's server side by side with the
// seed-design baseline (and a bare relay for the updates case), each in its
// own process, and prints tables of clonekv | baseline | ratio.
//
//	clonebench [--quick] [--cases updates,snapshot,...] [--json FILE] [--chart FILE.html] [--profile DIR] [--clonesrv PATH]
//
// The cluster case runs clonesrv processes (three nodes, one durable node,
// one --memory node): --clonesrv names the binary, by default the clonesrv
// next to clonebench (make bench builds both into bin/).
//
// The hidden subcommand "serve --impl clonekv|baseline|relay [--port N]
// [--cpuprofile FILE]" is how clonebench runs each server under test: it
// re-executes itself, so CPU time and RSS are the server's own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/clonekv/clonekv/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) > 0 && args[0] == "serve" {
		return serve(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("clonebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "run the quick suite (a smoke test, well under 45 s) instead of the full one")
	cases := fs.String("cases", strings.Join(bench.AllCases, ","), "comma-separated cases to run: "+strings.Join(bench.AllCases, ", "))
	jsonPath := fs.String("json", "", "write the results as JSON to this file")
	chartPath := fs.String("chart", "", "write a self-contained HTML chart and the tables to this file")
	profile := fs.String("profile", "", "directory where each server under test writes a CPU profile")
	clonesrv := fs.String("clonesrv", "", "clonesrv binary for the cluster case (default: clonesrv next to clonebench, as make bench builds it)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: clonebench [flags]\n\nBenchmarks clonekv against the seed-design baseline, each server in its own process.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	suite := bench.Full()
	if *quick {
		suite = bench.Quick()
	}
	if os.Getenv("CLONEBENCH_DEBUG") != "" {
		suite.Updates.Debug = stderr
		suite.Cluster.Debug = stderr
	}
	suite.Cases = nil
	for _, c := range strings.Split(*cases, ",") {
		if c = strings.TrimSpace(c); c != "" {
			suite.Cases = append(suite.Cases, c)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "clonebench: find own executable: %v\n", err)
		return 1
	}
	suite.Cluster.Clonesrv = *clonesrv
	if suite.Cluster.Clonesrv == "" {
		suite.Cluster.Clonesrv = filepath.Join(filepath.Dir(exe), "clonesrv")
	}
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			fmt.Fprintf(stderr, "clonebench: %v\n", err)
			return 1
		}
	}
	launcher := &bench.ExecLauncher{Path: exe, Args: []string{"serve"}, ProfileDir: *profile}
	prog := bench.NewProgress(stderr, 3*time.Second)
	progCtx, stopProg := context.WithCancel(ctx)
	progDone := make(chan struct{})
	go func() { defer close(progDone); prog.Run(progCtx) }()
	rep, err := bench.Run(ctx, suite, launcher, prog)
	stopProg()
	<-progDone
	rep.Command = "clonebench " + strings.Join(args, " ")
	rep.WriteText(stdout)
	code := 0
	if err != nil {
		fmt.Fprintf(stderr, "clonebench: %v\n", err)
		code = 1
	}
	if *jsonPath != "" {
		if err := rep.WriteJSON(*jsonPath); err != nil {
			fmt.Fprintf(stderr, "clonebench: %v\n", err)
			code = 1
		} else {
			fmt.Fprintf(stdout, "\nJSON: %s\n", *jsonPath)
		}
	}
	if *chartPath != "" {
		if err := rep.WriteChart(*chartPath); err != nil {
			fmt.Fprintf(stderr, "clonebench: %v\n", err)
			code = 1
		} else {
			fmt.Fprintf(stdout, "chart: %s\n", *chartPath)
		}
	}
	return code
}

// serve is the hidden subcommand that runs one server under test.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clonebench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	impl := fs.String("impl", bench.ImplClonekv, "server to run: clonekv, clonekv-gc-off, baseline or relay")
	port := fs.Int("port", 0, "base port (0: a free one)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the server to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := bench.ServeMain(ctx, *impl, *port, *cpuprofile, os.Stdin, stdout); err != nil {
		fmt.Fprintf(stderr, "clonebench serve: %v\n", err)
		return 1
	}
	return 0
}
