package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

var cliBin string

// TestMain builds clonecli once; the tests run it as a separate process,
// as a shell user would.
func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithBinary(m, &cliBin, "clonecli", "."))
}

// startServer runs an in-process server with a 100ms heartbeat until the
// test ends and returns its snapshot endpoint.
func startServer(t *testing.T) string {
	t.Helper()
	return startServerWith(t, server.Config{})
}

// startServerWith is startServer with cfg (Bind, Heartbeat and Logger are
// set here).
func startServerWith(t *testing.T, cfg server.Config) string {
	t.Helper()
	cfg.Bind, cfg.Heartbeat, cfg.Logger = "127.0.0.1", 100*time.Millisecond, slog.New(slog.DiscardHandler)
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, srv, 15*time.Second)
	return fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port())
}

type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// cli runs clonecli with args (and env entries like "CLONEKV_SERVER=..."),
// bounded by 20s.
func cli(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("clonecli %q: %v", args, err)
	}
	return r
}

func (r result) must(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// TestSetGetDel: set then get round-trips across processes; del removes;
// get of a missing key exits 3; the server comes from --server or
// CLONEKV_SERVER.
func TestSetGetDel(t *testing.T) {
	t.Parallel()
	ep := startServer(t)
	cli(t, nil, "--server", ep, "set", "/t/greeting", "hello world", "--ttl", "30s").must(t, 0)
	if r := cli(t, nil, "get", "--server", ep, "/t/greeting").must(t, 0); r.stdout != "hello world\n" {
		t.Fatalf("get printed %q", r.stdout)
	}
	env := []string{EnvServer + "=" + ep}
	cli(t, env, "set", "--", "/t/neg", "-5").must(t, 0)
	if r := cli(t, env, "get", "--json", "/t/neg").must(t, 0); !strings.Contains(r.stdout, `"value":"-5"`) {
		t.Fatalf("get --json printed %q", r.stdout)
	}
	cli(t, env, "del", "/t/greeting").must(t, 0)
	r := cli(t, env, "get", "/t/greeting").must(t, exitNotFound)
	if !strings.Contains(r.stderr, "/t/greeting") {
		t.Fatalf("not-found message %q", r.stderr)
	}
	cli(t, env, "set", "/t/x").must(t, exitUsage)
	cli(t, env, "frobnicate").must(t, exitUsage)
	if r := cli(t, nil, "--help").must(t, 0); !strings.Contains(r.stdout, "watch [SUBTREE]") {
		t.Fatalf("help: %q", r.stdout)
	}
}

// TestUnreachable: no server: a clear message and exit 1 within about the
// timeout, not a hang.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	// A port triple with nothing listening.
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", testkit.FreePorts(t))
	for _, args := range [][]string{{"get", "k"}, {"set", "k", "v"}, {"dump"}, {"watch"}} {
		r := cli(t, nil, append([]string{"--server", ep, "--timeout", "700ms"}, args...)...).must(t, exitFailure)
		if !strings.Contains(r.stderr, "cannot reach a clonekv server at "+ep) || r.took > 5*time.Second {
			t.Fatalf("%v: took %v, stderr %q", args, r.took, r.stderr)
		}
	}
}

// TestWatchSeesSet: watch prints an update within a second of a set made by
// another clonecli process, and exits 0 on SIGINT.
func TestWatchSeesSet(t *testing.T) {
	t.Parallel()
	ep := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, lines, stderr := startWatch(ctx, t, ep, "/w/", 16)
	expect := func(prefix string, within time.Duration) string {
		t.Helper()
		timer := time.NewTimer(within)
		defer timer.Stop()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch ended before %q; stderr: %s", prefix, stderr.String())
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timer.C:
				t.Fatalf("no %q line within %v; stderr: %s", prefix, within, stderr.String())
			}
		}
	}
	expect("resync-done ", 10*time.Second) // joined
	start := time.Now()
	setDone := make(chan error, 1)
	go func() { setDone <- exec.CommandContext(ctx, cliBin, "--server", ep, "set", "/w/k", "v1").Run() }()
	line := expect("update ", 5*time.Second)
	if err := <-setDone; err != nil {
		t.Fatalf("set: %v", err)
	}
	if took := time.Since(start); took > time.Second || !strings.HasSuffix(line, " /w/k v1") {
		t.Fatalf("watch printed %q %v after the set started", line, took)
	}
	cli(t, nil, "--server", ep, "set", "/other/k", "x").must(t, 0) // outside the subtree
	cli(t, nil, "--server", ep, "del", "/w/k").must(t, 0)
	if l := expect("", 5*time.Second); !strings.HasPrefix(l, "delete ") || !strings.HasSuffix(l, " /w/k") {
		t.Fatalf("next line %q, want the delete of /w/k (nothing outside the subtree)", l)
	}
	if err := watch.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v; stderr %s", err, stderr.String())
	}
}

// TestDumpMatchesServer: dump (text and JSON) prints exactly the server's
// snapshot of the subtree.
func TestDumpMatchesServer(t *testing.T) {
	t.Parallel()
	ep := startServer(t)
	port := 0
	fmt.Sscanf(ep[strings.LastIndex(ep, ":")+1:], "%d", &port)
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	push, err := transport.Connect(zctx, zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", port+2), transport.Options{Linger: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		m := kvmsg.Msg{Key: []byte(fmt.Sprintf("/d/%02d", i)), Body: []byte(fmt.Sprintf("v %d", i))}
		if i%10 == 0 {
			m.Body = []byte("tab\tand\nnewline")
		}
		if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
			t.Fatal(err)
		}
		m.Key = []byte(fmt.Sprintf("/e/%02d", i))
		if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
			t.Fatal(err)
		}
	}
	push.Close()
	var want map[string]string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var seq int64
		want, seq = rawSnapshot(t, zctx, port, "/d/")
		if seq == 80 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server at %d, want 80", seq)
		}
	}
	r := cli(t, nil, "--server", ep, "dump", "/d/").must(t, 0)
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		k, v, ok := strings.Cut(l, "\t")
		if !ok {
			t.Fatalf("dump line %q has no tab", l)
		}
		if strings.HasPrefix(v, `"`) {
			if err := json.Unmarshal([]byte(v), &v); err != nil {
				t.Fatalf("quoted value %s: %v", l, err)
			}
		}
		got[k] = v
	}
	if !maps.Equal(got, want) {
		t.Fatalf("dump (%d keys) differs from the server's snapshot (%d keys):\n%s", len(got), len(want), r.stdout)
	}
	r = cli(t, nil, "--server", ep, "dump", "--json", "/d/").must(t, 0)
	got = map[string]string{}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for {
		var rec struct{ Key, Value string }
		if err := dec.Decode(&rec); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got[rec.Key] = rec.Value
	}
	if !maps.Equal(got, want) {
		t.Fatalf("dump --json differs from the server's snapshot:\n%s", r.stdout)
	}
}

// rawSnapshot asks the server for a snapshot on a fresh DEALER.
// startWatch runs `clonecli watch subtree` against ep until ctx ends and
// returns the process, its stdout lines (closed at exit, buffered up to buf)
// and its stderr.
func startWatch(ctx context.Context, t *testing.T, ep, subtree string, buf int) (*exec.Cmd, <-chan string, *bytes.Buffer) {
	t.Helper()
	watch := exec.CommandContext(ctx, cliBin, "--server", ep, "watch", subtree)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &bytes.Buffer{}
	watch.Stderr = stderr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, buf)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return watch, lines, stderr
}

func rawSnapshot(t *testing.T, zctx *zmq.Context, port int, subtree string) (map[string]string, int64) {
	t.Helper()
	d, err := transport.Connect(zctx, zmq.DEALER, fmt.Sprintf("tcp://127.0.0.1:%d", port), transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return testkit.SnapshotMap(t, d, subtree, 10*time.Second)
}

// TestJoinWhileUpdating: dump and watch join while updates stream in, so
// updates arrive during their snapshots and are buffered, and watch's
// events are printed while later messages are being received. Every key
// /l/N holds vN: dump must print keys 0..k-1 with no hole (it follows
// everything, so a lost update would have forced a re-join) and each with
// its own value, and every update watch prints must carry its own value.
func TestJoinWhileUpdating(t *testing.T) {
	t.Parallel()
	ep := startServer(t)
	port := 0
	fmt.Sscanf(ep[strings.LastIndex(ep, ":")+1:], "%d", &port)
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	push, err := transport.Connect(zctx, zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", port+2), transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The pusher goroutine owns push: 20 updates every 5ms until stopped
	// (at most 15s, 60,000 updates).
	stop, pushed := make(chan struct{}), make(chan error, 1)
	go func() {
		defer push.Close()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		limit := time.After(15 * time.Second)
		for n := 0; n < 60_000; {
			select {
			case <-stop:
				pushed <- nil
				return
			case <-limit:
				pushed <- errors.New("pusher not stopped within 15s")
				return
			case <-tick.C:
			}
			for range 20 {
				m := kvmsg.Msg{Key: []byte(fmt.Sprintf("/l/%06d", n)), Body: []byte(fmt.Sprintf("v%06d", n))}
				if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
					pushed <- err
					return
				}
				n++
			}
		}
		pushed <- errors.New("pusher ran out of updates")
	}()
	stopPush := sync.OnceValue(func() error { close(stop); return <-pushed })
	defer stopPush()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, seq := rawSnapshot(t, zctx, port, "/none/"); seq >= 2000 {
			break // a snapshot long enough for updates to arrive during it
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not reach 2000 updates within 10s")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, lines, stderr := startWatch(ctx, t, ep, "/l/", 1024)

	r := cli(t, nil, "--server", ep, "dump").must(t, 0) // no subtree: every update seen, losses re-joined
	keys := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	for i, l := range keys {
		if want := fmt.Sprintf("/l/%06d\tv%06d", i, i); l != want {
			t.Fatalf("dump line %d is %q, want %q (%d lines)", i, l, want, len(keys))
		}
	}

	updates := 0
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for updates < 500 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended; stderr: %s", stderr.String())
			}
			f := strings.Fields(l)
			if len(f) == 0 || f[0] != "update" {
				continue
			}
			updates++
			if len(f) != 4 || "/l/"+f[3][1:] != f[2] {
				t.Fatalf("watch printed %q: the value is not the key's", l)
			}
		case <-timer.C:
			t.Fatalf("watch printed %d updates in 10s; stderr: %s", updates, stderr.String())
		}
	}
	if err := stopPush(); err != nil {
		t.Fatal(err)
	}
	if err := watch.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v; stderr %s", err, stderr.String())
	}
	t.Logf("dump printed %d keys; watch checked %d updates", len(keys), updates)
}

// TestZMTPHeartbeatFlag: --zmtp-heartbeat, before or after the command,
// becomes the client's Options.ZMTPHeartbeat (a set and a get through it
// work against a server); a negative one is a usage error.
func TestZMTPHeartbeatFlag(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--zmtp-heartbeat", "250ms", "get", "/k"}, {"get", "--zmtp-heartbeat", "250ms", "/k"}} {
		g, _, rest, err := parseGlobals(args, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		inv := newInvocation(context.Background(), rest[0], rest[1:], g, io.Discard, io.Discard)
		if _, err := inv.Parse(1, 1); err != nil {
			t.Fatal(err)
		}
		o, err := inv.options("", client.FilterLocal)
		if err != nil {
			t.Fatal(err)
		}
		if o.ZMTPHeartbeat != 250*time.Millisecond {
			t.Errorf("%q: Options.ZMTPHeartbeat %v, want 250ms", args, o.ZMTPHeartbeat)
		}
	}
	ep := startServer(t)
	cli(t, nil, "--server", ep, "--zmtp-heartbeat", "100ms", "set", "/t/hb", "on").must(t, 0)
	if r := cli(t, nil, "get", "--zmtp-heartbeat", "100ms", "--server", ep, "/t/hb").must(t, 0); r.stdout != "on\n" {
		t.Fatalf("get printed %q", r.stdout)
	}
	if r := cli(t, nil, "--server", ep, "--zmtp-heartbeat", "-1s", "get", "/t/hb").must(t, exitUsage); !strings.Contains(r.stderr, "--zmtp-heartbeat") {
		t.Fatalf("usage message %q", r.stderr)
	}
}
