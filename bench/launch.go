package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clonekv/clonekv/bench/baseline"
	"github.com/clonekv/clonekv/bench/relay"
	"github.com/clonekv/clonekv/server"
)

// The servers under test.
const (
	ImplClonekv  = "clonekv"
	ImplBaseline = "baseline"
	ImplRelay    = "relay" // updates only: it has no snapshot port and no map
	// ImplClonekvGCOff is clonekv with the collector off (clonesrv
	// --gc-percent -1): the gc-tail case's reference for the GC's share of
	// the latency tail.
	ImplClonekvGCOff = "clonekv-gc-off"

	// ImplDurable is clonekv on a data directory (clonesrv's default);
	// ImplClonekv keeps its log in memory (--memory). "clonekv-durable=DIR"
	// serves from DIR and leaves it (the restart measurement); without a
	// directory a temporary one is used and removed.
	ImplDurable = "clonekv-durable"
)

// Target is one running server under test: base port P (snapshots at P,
// updates published at P+1, collected at P+2) and the process it runs in.
type Target struct {
	Impl string
	Port int
	PID  int
	stop func() error
	gc   func() (GCSample, error)
}

// Stop stops the server and waits for it.
func (t *Target) Stop() error { return t.stop() }

// GC returns the server's collector figures so far.
func (t *Target) GC() (GCSample, error) { return t.gc() }

// Launcher starts servers under test.
type Launcher interface {
	Launch(ctx context.Context, impl string) (*Target, error)
}

// ExecLauncher starts each server as a child process: Path with Args, then
// "--impl IMPL" (cmd/clonebench passes its own executable and "serve"). The
// child must print "PORT n" on stdout once it serves, and stop when its
// stdin closes (see Serve), so a child never outlives the benchmark.
type ExecLauncher struct {
	Path string
	Args []string
	// ProfileDir, if set, makes each child write a CPU profile there
	// (IMPL-N.pprof), for finding where a server spends its time.
	ProfileDir string

	n int
}

// readyTimeout bounds how long a child may take to bind and start.
const readyTimeout = 15 * time.Second

// Launch starts impl in a child process and waits until it serves.
func (l *ExecLauncher) Launch(ctx context.Context, impl string) (*Target, error) {
	args := append(append([]string{}, l.Args...), "--impl", impl)
	if l.ProfileDir != "" {
		l.n++
		args = append(args, "--cpuprofile", filepath.Join(l.ProfileDir, fmt.Sprintf("%s-%d.pprof", impl, l.n)))
	}
	cmd := exec.Command(l.Path, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("launch %s: stdin: %w", impl, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("launch %s: stdout: %w", impl, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("launch %s: %w", impl, err)
	}
	done := make(chan error, 1)
	stop := func() error {
		stdin.Close()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("%s server did not stop in 10s: killed: %w", impl, <-done)
		}
	}
	portc := make(chan int, 1)
	gcc := make(chan string, 1)
	go func() { // owner: this launch; ends when the child closes stdout
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "PORT "); ok {
				if n, err := strconv.Atoi(p); err == nil {
					portc <- n
				}
			}
			if g, ok := strings.CutPrefix(sc.Text(), gcReply); ok {
				select {
				case gcc <- g:
				default: // nobody asked: drop
				}
			}
		}
		done <- cmd.Wait()
	}()
	var gcMu sync.Mutex
	gc := func() (GCSample, error) { // one question at a time on the child's stdin
		gcMu.Lock()
		defer gcMu.Unlock()
		if _, err := io.WriteString(stdin, gcQuery+"\n"); err != nil {
			return GCSample{}, fmt.Errorf("%s: ask for gc figures: %w", impl, err)
		}
		select {
		case line := <-gcc:
			return parseGCSample(line)
		case <-time.After(5 * time.Second):
			return GCSample{}, fmt.Errorf("%s: no gc figures in 5s", impl)
		}
	}
	select {
	case port := <-portc:
		return &Target{Impl: impl, Port: port, PID: cmd.Process.Pid, stop: stop, gc: gc}, nil
	case <-time.After(readyTimeout):
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	return nil, fmt.Errorf("launch %s: not ready in %v: %w", impl, readyTimeout, errors.Join(ctx.Err(), <-done))
}

// InProcessLauncher runs each server in this process, for tests: CPU and
// memory figures then describe the whole test process.
type InProcessLauncher struct{}

// Launch starts impl on a goroutine and returns once it serves.
func (InProcessLauncher) Launch(ctx context.Context, impl string) (*Target, error) {
	runCtx, cancel := context.WithCancel(context.Background())
	portc := make(chan int, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(runCtx, impl, 0, func(p int) { portc <- p }) }()
	select {
	case p := <-portc:
		return &Target{Impl: impl, Port: p, PID: os.Getpid(), stop: func() error {
			cancel()
			return <-done
		}, gc: func() (GCSample, error) { return ReadGC(), nil }}, nil
	case err := <-done:
		cancel()
		return nil, err
	case <-time.After(readyTimeout):
		cancel()
		return nil, fmt.Errorf("launch %s: not ready in %v: %w", impl, readyTimeout, <-done)
	}
}

// Serve runs impl on 127.0.0.1 at port (0: a free one), calls ready with the
// base port once it serves, and returns when ctx is done and the server has
// stopped.
func Serve(ctx context.Context, impl string, port int, ready func(port int)) error {
	quiet := slog.New(slog.DiscardHandler)
	var run func(context.Context) error
	if dir, ok := strings.CutPrefix(impl, ImplDurable); ok {
		dir = strings.TrimPrefix(dir, "=")
		if dir == "" {
			tmp, err := os.MkdirTemp("", "clonebench-durable-")
			if err != nil {
				return fmt.Errorf("serve %s: %w", impl, err)
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		return serveClonekv(ctx, port, server.LogConfig{DataDir: dir}, server.DefaultGCPercent, ready)
	}
	switch impl {
	case ImplClonekv, ImplClonekvGCOff:
		// As clonesrv --memory runs it (its --gc-percent default, or -1).
		gcPercent := server.DefaultGCPercent
		if impl == ImplClonekvGCOff {
			gcPercent = -1
		}
		return serveClonekv(ctx, port, server.LogConfig{}, gcPercent, ready)
	case ImplBaseline:
		srv, err := baseline.New(baseline.Config{Port: port, Logger: quiet})
		if err != nil {
			return fmt.Errorf("serve baseline: %w", err)
		}
		port, run = srv.Port(), srv.Run
	case ImplRelay:
		srv, err := relay.New(relay.Config{Port: port, Logger: quiet})
		if err != nil {
			return fmt.Errorf("serve relay: %w", err)
		}
		port, run = srv.Port(), srv.Run
	default:
		return fmt.Errorf("serve: unknown impl %q (want %s, %s, %s or %s)", impl, ImplClonekv, ImplClonekvGCOff, ImplBaseline, ImplRelay)
	}
	// Both poll at most 100 ms, so they serve as soon as Run has started.
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	ready(port)
	return <-done
}

// serveClonekv runs clonekv as clonesrv does (its --gc-percent default)
// with the log kept as lc says.
func serveClonekv(ctx context.Context, port int, lc server.LogConfig, gcPercent int, ready func(port int)) error {
	defer debug.SetGCPercent(debug.SetGCPercent(gcPercent))
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Port: port, Log: lc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("serve clonekv: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		return fmt.Errorf("serve clonekv: %w", err)
	}
	ready(srv.Port())
	return <-done
}

// ServeMain is the child side of ExecLauncher: it serves impl, prints
// "PORT n" to out, answers each "gc?" line on stdin with a "GC ..." line
// (its collector figures, see GCSample), and stops when stdin reaches EOF
// or ctx is done. With cpuprofile set it writes a CPU profile of its whole
// life there.
func ServeMain(ctx context.Context, impl string, port int, cpuprofile string, stdin io.Reader, out io.Writer) error {
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var outMu sync.Mutex // the ready callback and the stdin reader both write
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, format, args...)
	}
	go func() { // owner: ServeMain; ends at EOF, which the parent causes
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if sc.Text() == gcQuery {
				say("%s%s\n", gcReply, ReadGC().format())
			}
		}
		cancel()
	}()
	return Serve(ctx, impl, port, func(p int) { say("PORT %d\n", p) })
}
