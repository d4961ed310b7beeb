package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clonekv/clonekv/client"
)

// clientHelperEnv, when set to a server's endpoint, makes the test binary
// run a clonekv client instead of the tests (see TestMain). The test can
// then stall the whole client — its goroutines and libzmq's I/O threads —
// with SIGSTOP, which is a slow consumer as the server sees one: nothing
// read, TCP buffers full, the PUB's high-water mark reached.
const clientHelperEnv = "CLONEKV_RELIABILITY_CLIENT"

// clientLine is what the helper client prints every 100ms.
type clientLine struct {
	followerState
	Joins   int64 `json:"joins"`
	Resyncs int64 `json:"resyncs"`
	Gaps    int64 `json:"gaps"`
}

// runHelperClient follows the whole map with SubRcvHWM 1000 and prints a
// clientLine as JSON every 100ms until SIGTERM.
func runHelperClient() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, client.Options{
		Endpoints: []string{os.Getenv(clientHelperEnv)}, SubRcvHWM: 1000,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	enc := json.NewEncoder(os.Stdout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
		s, st := c.Snapshot(), c.Stats()
		if err := enc.Encode(clientLine{stateOf(s.Seq, s.Map()), st.Joins, st.Resyncs, st.Gaps}); err != nil {
			return 1
		}
	}
}

// clientProc is a helper client process and its latest line.
type clientProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	last clientLine
	n    int
}

func startClientProc(t testing.TB, port int) *clientProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clientHelperEnv+"="+endpoint(port, 0))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cp := &clientProc{cmd: cmd}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l clientLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				cp.mu.Lock()
				cp.last, cp.n = l, cp.n+1
				cp.mu.Unlock()
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-exited
	})
	waitFor(t, 15*time.Second, "helper client joined", func() bool {
		l, n := cp.latest()
		return n > 0 && l.Joins > 0
	})
	return cp
}

func (c *clientProc) latest() (clientLine, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.n
}

// quiet waits (up to 10s) until the process has printed nothing for d,
// as a stopped one does once its pipe is drained, and returns its last
// line.
func (c *clientProc) quiet(t testing.TB, d time.Duration) clientLine {
	t.Helper()
	last, n := c.latest()
	since := time.Now()
	waitFor(t, 10*time.Second, fmt.Sprintf("client process silent for %v", d), func() bool {
		l, m := c.latest()
		if m != n {
			last, n, since = l, m, time.Now()
		}
		return time.Since(since) >= d
	})
	return last
}

func (c *clientProc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// follower reads the latest line, waiting for one printed after the call
// so that a stopped process is not taken for an up-to-date one.
func (c *clientProc) follower(name string) follower {
	return follower{name: name, state: func() (followerState, error) {
		_, n0 := c.latest()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if l, n := c.latest(); n > n0 {
				return l.followerState, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return followerState{}, fmt.Errorf("%s printed nothing for 5s", name)
	}}
}
