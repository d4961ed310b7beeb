package main

import (
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/server"
)

// clusterFlags are the settings of a cluster node (README "Running a
// cluster").
type clusterFlags struct {
	node, cluster                       string
	heartbeat, election, lease, catchUp time.Duration
	maxLag                              uint64
}

func defineClusterFlags(fs interface {
	StringVar(*string, string, string, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	Uint64Var(*uint64, string, uint64, string)
}, f *clusterFlags) {
	fs.StringVar(&f.node, "node", "", "this node's NAME in --cluster")
	fs.StringVar(&f.cluster, "cluster", "", "run as one node of a raft cluster: every node as NAME=HOST:RAFTPORT/CHPPORT, comma-separated, the same list on every node (--port defaults to this node's CHPPORT; needs --node and a --data-dir; README \"Running a cluster\")")
	fs.DurationVar(&f.heartbeat, "raft-heartbeat-timeout", raftlog.DefaultHeartbeatTimeout, "cluster: a follower that hears nothing from the leader for this long (randomized up to twice) starts an election")
	fs.DurationVar(&f.election, "raft-election-timeout", raftlog.DefaultElectionTimeout, "cluster: how long a candidate waits for votes before it tries again (randomized up to twice)")
	fs.DurationVar(&f.lease, "raft-leader-lease-timeout", raftlog.DefaultLeaderLeaseTimeout, "cluster: a leader that hears from no quorum for this long steps down (at most --raft-heartbeat-timeout)")
	fs.DurationVar(&f.catchUp, "catch-up-timeout", raftlog.DefaultCatchUpTimeout, "cluster: how long a start waits for a leader and to catch up with it before serving what the node has, and how long a resume request ahead of the node waits for it")
	fs.Uint64Var(&f.maxLag, "max-lag", raftlog.DefaultMaxLag, "cluster: /readyz answers 503 on a node whose applied log is more than this many entries behind the leader's commit index")
}

// settleCluster checks the cluster settings and sets c.Cluster (and the
// port, when not given, to this node's CHPPORT).
func settleCluster(eff *config.Effective, f *flags, c *server.Config, bad func(key, format string, args ...any)) {
	cf := &f.cluster
	given := func(key string) bool { o, ok := eff.Origins[key]; return ok && o.Kind != "default" }
	if cf.cluster == "" {
		if cf.node != "" {
			bad("node", "needs --cluster (the list of nodes it belongs to)")
		}
		return
	}
	peers, err := server.ParseCluster(cf.cluster)
	if err != nil {
		bad("cluster", "%v", err)
		return
	}
	cc := &server.ClusterConfig{Node: cf.node, Peers: peers, HeartbeatTimeout: cf.heartbeat, ElectionTimeout: cf.election,
		LeaderLeaseTimeout: cf.lease, CatchUpTimeout: cf.catchUp, MaxLag: cf.maxLag}
	switch {
	case cf.node == "":
		bad("node", "must name this node: one of the names in --cluster")
		return
	case f.memory:
		bad("memory", "a cluster node keeps its log and its votes on disk: a member restarted empty could vote twice in one term and lose what the cluster acknowledged (use a --data-dir, a tmpfs one for tests)")
		return
	}
	if err := cc.Validate(); err != nil {
		key := "cluster"
		if cf.node != "" {
			if _, ok := findPeer(peers, cf.node); !ok {
				key = "node"
			}
		}
		bad(key, "%v", err)
		return
	}
	self, _ := findPeer(peers, cf.node)
	if !given("port") {
		c.Port = self.Port
	} else if c.Port != self.Port {
		bad("port", "node %q has CHPPORT %d in --cluster: leave --port out or give that one", self.Name, self.Port)
	}
	if cf.heartbeat <= 0 || cf.election <= 0 || cf.lease <= 0 || cf.catchUp <= 0 {
		for key, d := range map[string]time.Duration{"raft-heartbeat-timeout": cf.heartbeat, "raft-election-timeout": cf.election,
			"raft-leader-lease-timeout": cf.lease, "catch-up-timeout": cf.catchUp} {
			if d <= 0 {
				bad(key, "must be positive")
			}
		}
		return
	}
	// The defaults follow a heartbeat timeout set alone.
	if !given("raft-election-timeout") && cf.election < cf.heartbeat {
		cf.election = cf.heartbeat
	}
	if !given("raft-leader-lease-timeout") && cf.lease > cf.heartbeat {
		cf.lease = cf.heartbeat
	}
	cc.ElectionTimeout, cc.LeaderLeaseTimeout = cf.election, cf.lease
	if cf.lease > cf.heartbeat {
		bad("raft-leader-lease-timeout", "must be at most --raft-heartbeat-timeout (%v)", cf.heartbeat)
	}
	if cf.election < cf.heartbeat {
		bad("raft-election-timeout", "must be at least --raft-heartbeat-timeout (%v)", cf.heartbeat)
	}
	if cf.maxLag < 1 {
		bad("max-lag", "must be at least 1")
	}
	c.Cluster = cc
}

func findPeer(peers []server.ClusterPeer, name string) (server.ClusterPeer, bool) {
	for _, p := range peers {
		if p.Name == name {
			return p, true
		}
	}
	return server.ClusterPeer{}, false
}

// clusterHandler serves GET /v1/cluster: this node's view of the cluster
// as JSON (server.ClusterStatus), with the address of this --http
// listener (the connection's local address); 404 on a single node.
func clusterHandler(srv *server.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/cluster" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		st := srv.ClusterStatus()
		if st == nil {
			http.Error(w, "not a cluster node (no --cluster)", http.StatusNotFound)
			return
		}
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			st.HTTP = a.String()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
}
