package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/clonekv/clonekv/server"
)

// statusServer serves st at /v1/cluster, as clonesrv's --http listener.
func statusServer(t *testing.T, st server.ClusterStatus) string {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/cluster" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(st)
	}))
	t.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://")
}

// TestClusterStatusTable: clonecli cluster status tables the nodes it
// queried, lists a node it could not reach (and exits 1), and lists the
// cluster's other nodes with the leader's figures for them.
func TestClusterStatusTable(t *testing.T) {
	peers := []server.ClusterPeerStatus{{Name: "a", Raft: "h:1"}, {Name: "b", Raft: "h:2"}, {Name: "c", Raft: "h:3"}}
	others := func(self string, known bool) []server.ClusterPeerStatus {
		var out []server.ClusterPeerStatus
		for _, p := range peers {
			if p.Name != self {
				p.Known = known
				p.LastIndex, p.Lag, p.LastContactMillis = 40, 2, 7
				out = append(out, p)
			}
		}
		return out
	}
	leader := statusServer(t, server.ClusterStatus{Node: "b", Role: "leader", Term: 3, Leader: "b", CommitIndex: 42, AppliedIndex: 42,
		AppliedSequence: 1000, Ready: true, Peers: others("b", true)})
	follower := statusServer(t, server.ClusterStatus{Node: "a", Role: "follower", Term: 3, Leader: "b", CommitIndex: 41, AppliedIndex: 30,
		AppliedSequence: 900, Lag: 12, LastContactMillis: 15, NotReady: "lagging", Peers: others("a", false)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"cluster", "status", "--http", follower + "," + leader + "," + dead, "--timeout", "2s"},
		&stdout, &stderr, func(string) string { return "" })
	if code != exitFailure || !strings.Contains(stderr.String(), "1 of 3 nodes did not answer") {
		t.Errorf("exit %d, stderr %q; want 1 and the count of nodes that did not answer", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	want := [][]string{
		{"NODE", "ROLE", "TERM", "COMMIT", "APPLIED", "SEQUENCE", "LAG", "CONTACT", "LEADER", "READY"},
		{"a", "follower", "3", "41", "30", "900", "12", "15ms", "b", "no: lagging"},
		{"b", "leader", "3", "42", "42", "1000", "0", "0s", "b", "yes"},
		{"?", "unreachable", dead},
		{"c", "(not queried)", "40", "2", "7ms", "b"},
	}
	if len(lines) != len(want) {
		t.Fatalf("table:\n%s", stdout.String())
	}
	for i, w := range want {
		f := strings.Fields(lines[i])
		for _, cell := range w {
			if !strings.Contains(lines[i], cell) {
				t.Errorf("row %d %q lacks %q", i, lines[i], cell)
			}
		}
		if f[0] != w[0] {
			t.Errorf("row %d starts with %q, want %q", i, f[0], w[0])
		}
	}

	// --json: one status per line; the address from the environment.
	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"cluster", "status", "--json"}, &stdout, &stderr,
		func(k string) string { return map[string]string{EnvHTTP: leader}[k] })
	var got server.ClusterStatus
	if code != exitOK || json.Unmarshal(stdout.Bytes(), &got) != nil || got.Node != "b" || len(got.Peers) != 2 {
		t.Errorf("--json: exit %d, %q %q", code, stdout.String(), stderr.String())
	}

	for _, args := range [][]string{{"cluster", "status"}, {"cluster", "stats", "--http", leader}, {"cluster"}} {
		stdout.Reset()
		stderr.Reset()
		if code := run(context.Background(), args, &stdout, &stderr, func(string) string { return "" }); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, code, exitUsage, stderr.String())
		}
	}
}
