package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
)

// bin is clonesrv, built once for the package without -race (it is the
// real thing; the tests' own code runs under -race).
var bin string

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithBinary(m, &bin, "clonesrv", "github.com/clonekv/clonekv/cmd/clonesrv"))
}

// Timing of the nodes under test. Heartbeats are short so that silence is
// noticed quickly; raft keeps the defaults cluster-core gives clonesrv.
const (
	hugz        = 200 * time.Millisecond
	startWithin = 60 * time.Second // a loaded 2-core box starting three nodes
	exitWithin  = 30 * time.Second
)

// node is one member of a test cluster: its ports, its data directory and
// its current process (nil while it is down).
type node struct {
	name     string
	port     int // CHP base port P: snapshots at P, KVPUB at P+1, collector at P+2
	raftPort int
	httpPort int
	dir      string
	extra    []string

	mu      sync.Mutex
	p       *process
	stopped bool // SIGSTOPped
	starts  int
	kills   int
}

func (n *node) endpoint() string { return fmt.Sprintf("tcp://127.0.0.1:%d", n.port) }
func (n *node) httpURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", n.httpPort, path)
}

// process is one clonesrv process with its log kept.
type process struct {
	cmd       *exec.Cmd
	listening chan struct{} // closed at the "clonekv server listening" log line
	mu        sync.Mutex
	log       strings.Builder
	lines     int
	exited    chan struct{}
	state     *os.ProcessState
}

func (p *process) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// testCluster is N nodes started with the flags.
type testCluster struct {
	t     testing.TB
	nodes []*node
	spec  string // the --cluster value
	// old holds the logs of processes that ended, printed if the test fails.
	mu  sync.Mutex
	old []string
}

// clusterOpts tunes a test cluster.
type clusterOpts struct {
	nodes int
	extra []string // flags for every node
}

// newCluster allocates ports and data directories for opts.nodes nodes
// (default 3) and starts them all, then waits until every node serves and
// one leads.
func newCluster(t testing.TB, opts clusterOpts) *testCluster {
	t.Helper()
	if opts.nodes == 0 {
		opts.nodes = 3
	}
	c := &testCluster{t: t}
	var spec []string
	for i, base := range testkit.PortRuns(t, opts.nodes, 5) {
		n := &node{name: fmt.Sprintf("n%d", i+1), port: base, raftPort: base + 3, httpPort: base + 4,
			dir: t.TempDir(), extra: opts.extra}
		c.nodes = append(c.nodes, n)
		spec = append(spec, fmt.Sprintf("%s=127.0.0.1:%d/%d", n.name, n.raftPort, n.port))
	}
	c.spec = strings.Join(spec, ",")
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.down(n, syscall.SIGKILL)
		}
		if t.Failed() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, l := range c.old {
				t.Log(l)
			}
		}
	})
	for _, n := range c.nodes {
		c.launch(n)
	}
	for _, n := range c.nodes {
		c.waitServing(n)
	}
	c.leader(startWithin)
	return c
}

// args are the node's command line: the exact cluster flags.
func (c *testCluster) args(n *node) []string {
	return append([]string{
		"--bind", "127.0.0.1", "--port", fmt.Sprint(n.port), "--data-dir", n.dir,
		"--node", n.name, "--cluster", c.spec,
		"--http", fmt.Sprintf("127.0.0.1:%d", n.httpPort),
		"--hugz", hugz.String(), "--pub-hwm", "1000000",
		"--log-format", "json", "--log-level", "info",
	}, n.extra...)
}

// launch starts n's process without waiting for it to serve.
func (c *testCluster) launch(n *node) {
	c.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p != nil {
		c.t.Fatalf("%s: already running", n.name)
	}
	p := &process{cmd: exec.Command(bin, c.args(n)...), exited: make(chan struct{}), listening: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", n.name, err)
	}
	go func() { // owner: this process; ends when it exits
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			var rec struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "clonekv server listening" {
				once.Do(func() { close(p.listening) })
			}
			p.mu.Lock()
			if p.lines < 5000 { // bounded: a failing test prints it
				p.log.Write(sc.Bytes())
				p.log.WriteByte('\n')
			}
			p.lines++
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.state, _ = p.cmd.Process.Wait()
		close(p.exited)
	}()
	n.p, n.stopped = p, false
	n.starts++
}

// start launches n and waits until it serves.
func (c *testCluster) start(n *node) {
	c.t.Helper()
	c.launch(n)
	c.waitServing(n)
}

// waitServing waits until n has logged that it serves (its history open,
// its sockets read) and answers /healthz with 200.
func (c *testCluster) waitServing(n *node) {
	c.t.Helper()
	n.mu.Lock()
	p := n.p
	n.mu.Unlock()
	deadline := time.Now().Add(startWithin)
	for {
		select {
		case <-p.exited:
			c.t.Fatalf("%s exited before serving: %v\n%s", n.name, p.state, p.logText())
		default:
		}
		select {
		case <-p.listening:
			if code, _, err := httpGet(n.httpURL("/healthz"), time.Second); err == nil && code == http.StatusOK {
				return
			}
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not serving in %v\n%s", n.name, startWithin, p.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// down ends n's process with sig (SIGKILL or SIGTERM) and waits for it; a
// no-op when n is down. A stopped process is continued first so that
// SIGTERM can act.
func (c *testCluster) down(n *node, sig syscall.Signal) *os.ProcessState {
	c.t.Helper()
	n.mu.Lock()
	p := n.p
	n.p = nil
	stopped := n.stopped
	n.stopped = false
	if sig == syscall.SIGKILL && p != nil {
		n.kills++
	}
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	if stopped {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-p.exited:
	case <-time.After(exitWithin):
		_ = p.cmd.Process.Kill()
		<-p.exited
		c.t.Errorf("%s did not exit within %v of %v", n.name, exitWithin, sig)
	}
	c.mu.Lock()
	c.old = append(c.old, fmt.Sprintf("%s (pid %d, %v after %v) log:\n%s", n.name, p.cmd.Process.Pid, p.state, sig, p.logText()))
	c.mu.Unlock()
	return p.state
}

// kill9 kills n with SIGKILL.
func (c *testCluster) kill9(n *node) { c.t.Helper(); c.down(n, syscall.SIGKILL) }

// sigstop stops n's process (it keeps its sockets; nothing runs).
func (c *testCluster) sigstop(n *node) {
	c.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p == nil || n.stopped {
		c.t.Fatalf("%s: not running, cannot stop", n.name)
	}
	if err := n.p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatalf("SIGSTOP %s: %v", n.name, err)
	}
	n.stopped = true
}

// sigcont continues a stopped n.
func (c *testCluster) sigcont(n *node) {
	c.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p == nil || !n.stopped {
		c.t.Fatalf("%s: not stopped", n.name)
	}
	if err := n.p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatalf("SIGCONT %s: %v", n.name, err)
	}
	n.stopped = false
}

// up reports whether n has a running (not stopped) process.
func (n *node) up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.p != nil && !n.stopped
}

// running returns the nodes that are up.
func (c *testCluster) running() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.up() {
			out = append(out, n)
		}
	}
	return out
}

// others returns the nodes other than n.
func (c *testCluster) others(n *node) []*node {
	var out []*node
	for _, o := range c.nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

func (c *testCluster) byName(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// leader waits until the running nodes agree on one leader among them: it
// says it leads, and every other running node names it. It fails the test
// after d.
func (c *testCluster) leader(d time.Duration) *node {
	c.t.Helper()
	var last string
	deadline := time.Now().Add(d)
	for {
		if l, why := c.agreedLeader(); l != nil {
			return l
		} else {
			last = why
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no leader agreed within %v: %s", d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agreedLeader is one look at the running nodes' status.
func (c *testCluster) agreedLeader() (*node, string) {
	var leaders []string
	names := map[string]int{}
	run := c.running()
	for _, n := range run {
		st, err := n.status()
		if err != nil {
			return nil, err.Error()
		}
		if st.Role == roleLeader {
			leaders = append(leaders, n.name)
		}
		names[st.Leader]++
	}
	if len(leaders) != 1 {
		return nil, fmt.Sprintf("leaders %v among %d running", leaders, len(run))
	}
	if names[leaders[0]] != len(run) {
		return nil, fmt.Sprintf("%s leads but the running nodes name %v", leaders[0], names)
	}
	return c.byName(leaders[0]), ""
}

// httpGet fetches url within d and returns the status code and body.
func httpGet(url string, d time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// ready reports n's /readyz status code (0 when it does not answer).
func (n *node) ready() int {
	code, _, err := httpGet(n.httpURL("/readyz"), time.Second)
	if err != nil {
		return 0
	}
	return code
}

// metric reads one sample from n's /metrics: name with the labels given as
// `name{a="b"}` or bare. It returns false when absent.
func (n *node) metric(sample string) (float64, bool, error) {
	code, body, err := httpGet(n.httpURL("/metrics"), 2*time.Second)
	if err != nil {
		return 0, false, fmt.Errorf("%s metrics: %w", n.name, err)
	}
	if code != http.StatusOK {
		return 0, false, fmt.Errorf("%s metrics: status %d", n.name, code)
	}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || name != sample {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(val, &v); err != nil {
			return 0, false, fmt.Errorf("%s metric %s: %q: %w", n.name, sample, val, err)
		}
		return v, true, nil
	}
	return 0, false, nil
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, 20*time.Millisecond, what, cond)
}
