package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/server"
)

var builtCLI struct {
	once sync.Once
	bin  string
	err  error
}

// buildCLI builds clonecli next to the shared clonesrv binary.
func buildCLI(t *testing.T) string {
	t.Helper()
	buildServer(t)
	builtCLI.once.Do(func() {
		builtCLI.bin = filepath.Join(built.dir, "clonecli")
		builtCLI.err = testkit.GoBuild(builtCLI.bin, "github.com/clonekv/clonekv/cmd/clonecli")
	})
	if builtCLI.err != nil {
		t.Fatal(builtCLI.err)
	}
	return builtCLI.bin
}

// procNode is one clonesrv process of a test cluster.
type procNode struct {
	name, endpoint, http string
	cmd                  *exec.Cmd
	stderr               *syncBuffer
	exited               chan error
}

func (n *procNode) kill() {
	n.cmd.Process.Kill()
	<-n.exited
	n.exited <- nil // for the cleanup
}

// cli runs clonecli and returns its stdout, stderr and exit error.
func cli(bin string, args ...string) (string, string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// TestClusterProcesses (issue 13, behaviour 1, and the minority half of
// 5): three clonesrv processes started from the flags form a cluster;
// clonecli cluster status lists one leader and two followers; a set at the
// leader appears on all three with the same sequence. With two of the three
// killed, the last one says it is not ready (no leader), warns once, and
// still serves the last committed state.
func TestClusterProcesses(t *testing.T) {
	t0 := time.Now()
	srv, cliBin := buildServer(t), buildCLI(t)
	t.Logf("built in %v", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	rafts, https := testkit.FreePorts(t), testkit.FreePorts(t)
	var spec []string
	var nodes []*procNode
	for i, name := range []string{"a", "b", "c"} {
		p := testkit.FreePorts(t)
		spec = append(spec, fmt.Sprintf("%s=127.0.0.1:%d/%d", name, rafts+i, p))
		nodes = append(nodes, &procNode{name: name, endpoint: fmt.Sprintf("tcp://127.0.0.1:%d", p), http: fmt.Sprintf("127.0.0.1:%d", https+i)})
	}
	for _, n := range nodes {
		n.stderr = &syncBuffer{}
		n.cmd = exec.Command(srv, "--node", n.name, "--cluster", strings.Join(spec, ","), "--bind", "127.0.0.1",
			"--data-dir", t.TempDir(), "--http", n.http, "--log-format", "json")
		n.cmd.Stderr = n.stderr
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n.exited = make(chan error, 1)
		go func() { n.exited <- n.cmd.Wait() }()
		t.Cleanup(func() {
			n.cmd.Process.Kill()
			<-n.exited
			if t.Failed() {
				t.Logf("%s stderr:\n%s", n.name, n.stderr.String())
			}
		})
	}
	httpList := nodes[0].http + "," + nodes[1].http + "," + nodes[2].http

	// One leader, two followers, all ready and agreeing on the leader.
	var statuses []server.ClusterStatus
	testkit.WaitFor(t, 30*time.Second, 50*time.Millisecond, "one leader and two ready followers in clonecli cluster status", func() bool {
		out, _, err := cli(cliBin, "cluster", "status", "--http", httpList, "--json")
		if err != nil {
			return false
		}
		statuses = statuses[:0]
		dec := json.NewDecoder(strings.NewReader(out))
		for {
			var s server.ClusterStatus
			if dec.Decode(&s) != nil {
				break
			}
			statuses = append(statuses, s)
		}
		roles := map[string]int{}
		for _, s := range statuses {
			roles[s.Role]++
			if !s.Ready || s.Leader == "" || s.Leader != statuses[0].Leader || s.History == "" || s.History != statuses[0].History {
				return false
			}
		}
		return len(statuses) == 3 && roles["leader"] == 1 && roles["follower"] == 2
	})
	t.Logf("cluster up in %v", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	var leader *procNode
	for _, n := range nodes {
		if n.name == statuses[0].Leader {
			leader = n
		}
	}
	table, _, err := cli(cliBin, "cluster", "status", "--http", httpList)
	if err != nil {
		t.Fatalf("cluster status: %v\n%s", err, table)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NODE") || strings.Count(table, " leader ") != 1 || strings.Count(table, " follower ") != 2 {
		t.Fatalf("cluster status table:\n%s", table)
	}

	// A set at the leader reaches every node with one sequence.
	if out, errOut, err := cli(cliBin, "--server", leader.endpoint, "set", "/cluster/k", "v1"); err != nil {
		t.Fatalf("set at the leader %s: %v\n%s%s", leader.name, err, out, errOut)
	}
	type got struct {
		Seq   int64  `json:"seq"`
		Value string `json:"value"`
	}
	var seqs []int64
	for _, n := range nodes {
		var g got
		testkit.WaitFor(t, 10*time.Second, 20*time.Millisecond, "the set on node "+n.name, func() bool {
			out, _, err := cli(cliBin, "--server", n.endpoint, "get", "--json", "/cluster/k")
			return err == nil && json.Unmarshal([]byte(out), &g) == nil && g.Value == "v1"
		})
		seqs = append(seqs, g.Seq)
	}
	if seqs[0] != seqs[1] || seqs[1] != seqs[2] || seqs[0] < 1 {
		t.Fatalf("sequences of the set on a, b, c: %v", seqs)
	}

	t.Logf("set seen everywhere in %v", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	// A minority: kill -9 the leader and one follower.
	var rest []*procNode
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	leader.kill()
	rest[0].kill()
	last := rest[1]
	testkit.WaitFor(t, 20*time.Second, 50*time.Millisecond, "readyz 503 no leader on the last node", func() bool {
		resp, err := http.Get("http://" + last.http + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "no leader")
	})
	t.Logf("minority noticed in %v", time.Since(t0).Round(time.Millisecond))
	out, errOut, err := cli(cliBin, "--server", last.endpoint, "get", "/cluster/k")
	if err != nil || strings.TrimSpace(out) != "v1" {
		t.Fatalf("the last node does not serve its committed state: %v %q %s", err, out, errOut)
	}
	// Still no leader a few election timeouts later: one warning only.
	time.Sleep(2 * time.Second)
	if n := strings.Count(last.stderr.String(), "raft: no leader"); n != 1 {
		t.Errorf("%d \"no leader\" warnings, want 1:\n%s", n, last.stderr.String())
	}
}
