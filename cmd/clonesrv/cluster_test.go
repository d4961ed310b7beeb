package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

const testSpec = "a=127.0.0.1:7001/7100,b=127.0.0.1:7002/7200,c=127.0.0.1:7003/7300"

// TestClusterFlagErrors: what clonesrv refuses to start a cluster node
// with, each error naming the key and where its value came from.
func TestClusterFlagErrors(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "node.toml")
	os.WriteFile(conf, []byte("node = \"z\"\ncluster = \""+testSpec+"\"\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"node without cluster", []string{"--node", "a"}, nil, []string{`node = "a" (from flag --node): needs --cluster`}},
		{"cluster without node", []string{"--cluster", testSpec}, nil, []string{"node = \"\"", "must name this node"}},
		{"unknown node", []string{"--node", "d", "--cluster", testSpec}, nil, []string{`node = "d" (from flag --node)`, `node "d" is not in the list (a, b, c)`}},
		{"unknown node (file)", []string{"--config", conf}, nil, []string{`node = "z" (from file ` + conf + `)`, `node "z" is not in the list`}},
		{"duplicate name", []string{"--node", "a", "--cluster", "a=127.0.0.1:7001/7100,a=127.0.0.1:7002/7200"}, nil, []string{`node name "a" listed twice`}},
		{"duplicate raft address", []string{"--node", "a", "--cluster", "a=127.0.0.1:7001/7100,b=127.0.0.1:7001/7200"}, nil,
			[]string{`raft port 127.0.0.1:7001 of node "b" is also used by node "a"`}},
		{"raft port inside a clone triple", []string{"--node", "a", "--cluster", "a=127.0.0.1:7001/7100,b=127.0.0.1:7102/7200"}, nil,
			[]string{`raft port 127.0.0.1:7102 of node "b" is also used by node "a"`}},
		{"overlapping clone ports", []string{"--node", "a", "--cluster", "a=127.0.0.1:7001/7100,b=127.0.0.1:7002/7101"}, nil,
			[]string{`clone port P+0 127.0.0.1:7101 of node "b" is also used by node "a"`}},
		{"bad item", []string{"--node", "a", "--cluster", "a=127.0.0.1:7001"}, nil, []string{`cluster = "a=127.0.0.1:7001" (from flag --cluster)`, "no /CHPPORT", "NAME=HOST:RAFTPORT/CHPPORT"}},
		{"no name", []string{"--node", "a", "--cluster", "127.0.0.1:7001/7100"}, nil, []string{"no NAME="}},
		{"bad raft port", []string{"--node", "a", "--cluster", "a=127.0.0.1:x/7100"}, nil, []string{"RAFTPORT out of range"}},
		{"bad chp port", []string{"--node", "a", "--cluster", "a=127.0.0.1:7001/65535"}, nil, []string{"CHPPORT out of range 1..65533"}},
		{"port differs", []string{"--node", "b", "--cluster", testSpec, "--port", "7100"}, nil,
			[]string{`port = 7100 (from flag --port): node "b" has CHPPORT 7200 in --cluster`}},
		{"port differs (env)", []string{"--node", "b", "--cluster", testSpec}, []string{"CLONEKV_PORT=5556"}, []string{"port = 5556 (from env CLONEKV_PORT)"}},
		{"memory", []string{"--node", "a", "--cluster", testSpec, "--memory"}, nil, []string{"memory = true (from flag --memory): a cluster node keeps its log and its votes on disk"}},
		{"lease above heartbeat", []string{"--node", "a", "--cluster", testSpec, "--raft-leader-lease-timeout", "2s"}, nil,
			[]string{"raft-leader-lease-timeout = \"2s\"", "at most --raft-heartbeat-timeout (500ms)"}},
		{"election below heartbeat", []string{"--node", "a", "--cluster", testSpec, "--raft-heartbeat-timeout", "1s", "--raft-leader-lease-timeout", "1s", "--raft-election-timeout", "100ms"}, nil,
			[]string{"raft-election-timeout = \"100ms\"", "at least --raft-heartbeat-timeout (1s)"}},
		{"zero timer", []string{"--node", "a", "--cluster", testSpec, "--catch-up-timeout", "0s"}, nil, []string{`catch-up-timeout = "0s" (from flag --catch-up-timeout): must be positive`}},
		{"zero max-lag", []string{"--node", "a", "--cluster", testSpec, "--max-lag", "0"}, nil, []string{"max-lag = 0 (from flag --max-lag): must be at least 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, tc.env, &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestClusterFlags: a valid cluster node's settings: --port defaults to
// the node's CHPPORT (or may repeat it), the timers and the peers reach the
// server configuration, from flags or a config file.
func TestClusterFlags(t *testing.T) {
	settleArgs := func(args, env []string) server.Config {
		t.Helper()
		fs := flag.NewFlagSet("clonesrv", flag.ContinueOnError)
		var f flags
		defineFlags(fs, &f)
		eff, err := loader.Load(fs, args, env)
		if err != nil {
			t.Fatal(err)
		}
		st, err := settle(eff, &f, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return st.srv
	}
	c := settleArgs([]string{"--node", "b", "--cluster", testSpec, "--raft-heartbeat-timeout", "800ms", "--max-lag", "50"}, nil)
	if c.Port != 7200 || c.Cluster == nil || c.Cluster.Node != "b" || len(c.Cluster.Peers) != 3 {
		t.Fatalf("settled %+v cluster %+v", c, c.Cluster)
	}
	want := server.ClusterPeer{Name: "c", Host: "127.0.0.1", RaftPort: 7003, Port: 7300}
	if c.Cluster.Peers[2] != want || c.Cluster.Peers[2].Collector() != "tcp://127.0.0.1:7302" {
		t.Errorf("peer c %+v, want %+v", c.Cluster.Peers[2], want)
	}
	// The election timeout, left at its default, follows the heartbeat's.
	if c.Cluster.HeartbeatTimeout != 800*time.Millisecond || c.Cluster.ElectionTimeout != 800*time.Millisecond ||
		c.Cluster.LeaderLeaseTimeout != 500*time.Millisecond || c.Cluster.MaxLag != 50 {
		t.Errorf("timers %+v", c.Cluster)
	}
	if c := settleArgs([]string{"--node", "a", "--cluster", testSpec, "--port", "7100"}, nil); c.Port != 7100 {
		t.Errorf("--port equal to the CHPPORT: port %d", c.Port)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "node.toml")
	os.WriteFile(conf, []byte("node = \"c\"\ncluster = \""+testSpec+"\"\ndata-dir = \""+dir+"\"\n"), 0o644)
	if c := settleArgs([]string{"--config", conf}, nil); c.Port != 7300 || c.Cluster == nil || c.Cluster.Node != "c" || c.Log.DataDir != dir {
		t.Errorf("from a file: port %d cluster %+v dir %q", c.Port, c.Cluster, c.Log.DataDir)
	}
	if c := settleArgs(nil, nil); c.Cluster != nil {
		t.Errorf("no --cluster: cluster %+v", c.Cluster)
	}
}
