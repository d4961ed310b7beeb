package server

import (
	"strings"
	"testing"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/raftlog"
)

// TestClusterConfig: the --cluster list's form, and a cluster node's
// configuration checks (its port, its data directory).
func TestClusterConfig(t *testing.T) {
	peers, err := ParseCluster(" a=127.0.0.1:7001/7100, b=[::1]:7002/7200,c=node-c.example:7003/7300 ")
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 || peers[1].Host != "::1" || peers[1].RaftAddr() != "[::1]:7002" || peers[2].Collector() != "tcp://node-c.example:7302" ||
		peers[0].Endpoint() != "tcp://127.0.0.1:7100" || peers[0].String() != "a=127.0.0.1:7001/7100" {
		t.Fatalf("parsed %+v", peers)
	}
	for spec, want := range map[string]string{
		"":                       "no nodes listed",
		"a=127.0.0.1:7001":       "no /CHPPORT",
		"=127.0.0.1:7001/7100":   "no NAME=",
		"a b=127.0.0.1:1/7100":   "may not contain spaces",
		"a=7001/7100":            "not a host and port",
		"a=127.0.0.1:0/7100":     "RAFTPORT out of range",
		"a=127.0.0.1:7001/0":     "CHPPORT out of range",
		"a=127.0.0.1:7001/65534": "CHPPORT out of range",
	} {
		if _, err := ParseCluster(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCluster(%q): %v, want %q", spec, err, want)
		}
	}
	cc := &ClusterConfig{Node: "b", Peers: peers}
	c, err := (&Config{Cluster: cc, Log: LogConfig{DataDir: t.TempDir()}}).withDefaults()
	if err != nil || c.Port != 7200 {
		t.Fatalf("port left out: %d %v, want 7200", c.Port, err)
	}
	if _, err := (&Config{Port: 7100, Cluster: cc, Log: LogConfig{DataDir: t.TempDir()}}).withDefaults(); err == nil || !strings.Contains(err.Error(), `node "b" listens on 7200`) {
		t.Errorf("another port: %v", err)
	}
	if _, err := (&Config{Cluster: cc}).withDefaults(); err == nil || !strings.Contains(err.Error(), "needs a data directory") {
		t.Errorf("no data directory: %v", err)
	}
	if _, err := (&Config{Cluster: &ClusterConfig{Node: "x", Peers: peers}, Log: LogConfig{DataDir: t.TempDir()}}).withDefaults(); err == nil ||
		!strings.Contains(err.Error(), `node "x" is not in the list (a, b, c)`) {
		t.Errorf("unknown node: %v", err)
	}
}

// TestLeadershipMessage: what the proposer and the reaper are told.
func TestLeadershipMessage(t *testing.T) {
	peers, _ := ParseCluster("a=127.0.0.1:7001/7100,b=127.0.0.2:7002/7200")
	cc := &ClusterConfig{Node: "a", Peers: peers}
	for _, tc := range []struct {
		cc   *ClusterConfig
		in   raftlog.Leader
		want actors.Leadership
	}{
		{cc, raftlog.Leader{ID: "b", Addr: "127.0.0.2:7002", Term: 4}, actors.Leadership{Leader: "b", Collector: "tcp://127.0.0.2:7202", Term: 4}},
		{cc, raftlog.Leader{Self: true, ID: "a", Term: 5}, actors.Leadership{Self: true, Leader: "a", Term: 5}},
		{cc, raftlog.Leader{Term: 6}, actors.Leadership{Term: 6}},
		{nil, raftlog.Leader{Self: true, ID: "clonesrv", Term: 2}, actors.Leadership{Self: true, Leader: "clonesrv", Term: 2}},
	} {
		if got := tc.cc.leadership(tc.in); *got != tc.want {
			t.Errorf("%+v: got %+v, want %+v", tc.in, *got, tc.want)
		}
	}
}
