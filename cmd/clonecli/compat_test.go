package main

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/guideserver"
	"github.com/clonekv/clonekv/server"
)

// expectLine returns the next line of lines starting with prefix within d.
func expectLine(t *testing.T, lines <-chan string, prefix string, d time.Duration, stderr func() string) string {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended before %q; stderr: %s", prefix, stderr())
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timer.C:
			t.Fatalf("no %q line within %v; stderr: %s", prefix, d, stderr())
		}
	}
}

// checkCommands runs get, set (with and without ttl), del, dump, watch and
// demo against the server at ep, with extra global flags, and then keeps
// the watch idle for idle, requiring that it never re-joins.
func checkCommands(t *testing.T, ep string, flags []string, idle time.Duration) {
	t.Helper()
	g := append([]string{"--server", ep}, flags...)
	run := func(args ...string) result { return cli(t, nil, append(append([]string{}, g...), args...)...) }

	ctx, cancel := context.WithTimeout(context.Background(), idle+60*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, cliBin, append(append([]string{}, g...), "watch", "/c/")...)
	lines, stderr := pipeLines(t, watch)
	expectLine(t, lines, "resync-done ", 10*time.Second, stderr.String)

	run("set", "/c/k", "v1").must(t, 0)
	if l := expectLine(t, lines, "update ", 5*time.Second, stderr.String); !strings.HasSuffix(l, " /c/k v1") {
		t.Fatalf("watch printed %q", l)
	}
	if r := run("get", "/c/k").must(t, 0); r.stdout != "v1\n" {
		t.Fatalf("get printed %q", r.stdout)
	}
	run("set", "/c/t", "short", "--ttl", "1s").must(t, 0)
	if r := run("dump", "/c/").must(t, 0); r.stdout != "/c/k\tv1\n/c/t\tshort\n" {
		t.Fatalf("dump printed %q", r.stdout)
	}
	if l := expectLine(t, lines, "delete ", 10*time.Second, stderr.String); !strings.HasSuffix(l, " /c/t") {
		t.Fatalf("watch printed %q, want the ttl delete of /c/t", l)
	}
	run("get", "/c/t").must(t, exitNotFound)
	run("del", "/c/k").must(t, 0)
	if l := expectLine(t, lines, "delete ", 5*time.Second, stderr.String); !strings.HasSuffix(l, " /c/k") {
		t.Fatalf("watch printed %q, want the delete of /c/k", l)
	}
	run("get", "/c/k").must(t, exitNotFound)

	// demo writes under its subtree and prints what arrives.
	dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	defer dcancel()
	demo := exec.CommandContext(dctx, cliBin, append(append([]string{}, g...), "demo", "--subtree", "/d/", "--interval", "100ms")...)
	dlines, dstderr := pipeLines(t, demo)
	expectLine(t, dlines, "update ", 10*time.Second, dstderr.String)
	if err := demo.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := demo.Wait(); err != nil {
		t.Fatalf("demo after SIGINT: %v; stderr %s", err, dstderr.String())
	}

	// Idle: no line at all (a re-join prints resync-started).
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for done := false; !done; {
		select {
		case l := <-lines:
			t.Fatalf("idle watch printed %q; stderr: %s", l, stderr.String())
		case <-timer.C:
			done = true
		}
	}
	if err := watch.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v; stderr %s", err, stderr.String())
	}
	if s := stderr.String(); strings.Contains(s, "re-joining") {
		t.Fatalf("watch logged a re-join: %s", s)
	}
}

// TestGuideServers is issue 10's behaviour 1 for clonecli: every command
// works against servers that behave as the Guide's Go Model Five server and
// Model Six primary, and an idle watch runs 30s without a re-join.
func TestGuideServers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		model guideserver.Model
		flags []string
	}{
		{guideserver.ModelFive, nil},
		{guideserver.ModelSix, []string{"--collector", "sub"}},
	} {
		t.Run(tc.model.String(), func(t *testing.T) {
			t.Parallel()
			srv, err := guideserver.Start(guideserver.Config{Model: tc.model})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			checkCommands(t, srv.Endpoint(), append([]string{"--log-level", "info"}, tc.flags...), 30*time.Second)
			if st := srv.Stats(); st.Dropped != 0 || st.Expired == 0 {
				t.Fatalf("server stats %+v: want no input the Guide server would stop on, and the ttl expiry", st)
			}
		})
	}
}

// TestCollectorSub is issue 10's behaviour 2: clonecli --collector sub (and
// CLONEKV_COLLECTOR=sub) against clonesrv --collector sub.
func TestCollectorSub(t *testing.T) {
	t.Parallel()
	ep := startServerWith(t, server.Config{Collector: server.CollectorSub})
	checkCommands(t, ep, []string{"--collector", "sub"}, 2*time.Second)
	cli(t, []string{EnvCollector + "=sub"}, "--server", ep, "set", "/env/k", "v").must(t, 0)
	if r := cli(t, []string{EnvCollector + "=sub"}, "--server", ep, "get", "/env/k").must(t, 0); r.stdout != "v\n" {
		t.Fatalf("get printed %q", r.stdout)
	}
	r := cli(t, nil, "--server", ep, "--collector", "push", "get", "/env/k").must(t, exitUsage)
	if !strings.Contains(r.stderr, "pull or sub") {
		t.Fatalf("bad --collector: %q", r.stderr)
	}
}

// lockedBuffer is a process's stderr, written by exec's copying goroutine
// and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pipeLines starts cmd and returns its stdout lines and its stderr. The
// process is killed (by its context) and waited for at the end at the
// latest.
func pipeLines(t *testing.T, cmd *exec.Cmd) (<-chan string, *lockedBuffer) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines, stderr
}
