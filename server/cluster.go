package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/raftlog"
)

// ClusterPeer is one node of a cluster, as clonesrv's --cluster lists it:
// NAME=HOST:RAFTPORT/CHPPORT.
type ClusterPeer struct {
	Name string
	Host string
	// RaftPort is where the node's raft transport listens (on Host);
	// Port is its clone base port P (snapshots P, publisher P+1,
	// collector P+2).
	RaftPort, Port int
}

// RaftAddr is the peer's raft address HOST:RAFTPORT.
func (p ClusterPeer) RaftAddr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.RaftPort)) }

// Endpoint is the peer's clone base address tcp://HOST:P.
func (p ClusterPeer) Endpoint() string {
	return "tcp://" + net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
}

// Collector is the peer's collector endpoint tcp://HOST:P+2.
func (p ClusterPeer) Collector() string {
	return "tcp://" + net.JoinHostPort(p.Host, strconv.Itoa(p.Port+2))
}

func (p ClusterPeer) String() string {
	return fmt.Sprintf("%s=%s/%d", p.Name, p.RaftAddr(), p.Port)
}

// ClusterConfig makes the server one node of a raft cluster (README
// "Running a cluster"). Every node is started with the same Peers; each
// with its own Node name, data directory and, as Config.Port, its own
// peer's Port.
type ClusterConfig struct {
	// Node is this server's name in Peers.
	Node  string
	Peers []ClusterPeer
	// Raft timers (defaults raftlog.DefaultHeartbeatTimeout, ...).
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// CatchUpTimeout bounds how long the start waits for a leader and to
	// catch up with it before serving (default
	// raftlog.DefaultCatchUpTimeout), and how long a resume request from
	// a client ahead of the node waits for it (aheadWait).
	CatchUpTimeout time.Duration
	// MaxLag is how many log entries a node may be behind the leader's
	// commit index and still say it is ready (default
	// raftlog.DefaultMaxLag).
	MaxLag uint64
}

// aheadWait is how long a resume request from a client ahead of this node
// waits for it to catch up (actors.SnapshotConfig.AheadWait): a node that
// is not the leader learns what was committed a heartbeat later, or after
// an election when the leader died, which CatchUpTimeout bounds. A single
// node (nil) never waits.
func (c *ClusterConfig) aheadWait() time.Duration {
	switch {
	case c == nil:
		return 0
	case c.CatchUpTimeout > 0:
		return c.CatchUpTimeout
	default:
		return raftlog.DefaultCatchUpTimeout
	}
}

// ParseCluster reads a --cluster list: NAME=HOST:RAFTPORT/CHPPORT,... It
// checks each item's form; ClusterConfig.Validate checks the whole.
func ParseCluster(spec string) ([]ClusterPeer, error) {
	var out []ClusterPeer
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("%q: %s (want NAME=HOST:RAFTPORT/CHPPORT)", item, why)
		}
		name, rest, ok := strings.Cut(item, "=")
		if !ok || name == "" {
			return nil, bad("no NAME=")
		}
		if strings.ContainsAny(name, " /:=\t") {
			return nil, bad("a name may not contain spaces, '/', ':' or '='")
		}
		hostport, chp, ok := strings.Cut(rest, "/")
		if !ok {
			return nil, bad("no /CHPPORT")
		}
		host, raftPort, err := net.SplitHostPort(hostport)
		if err != nil || host == "" {
			return nil, bad("HOST:RAFTPORT is not a host and port")
		}
		rp, err := strconv.Atoi(raftPort)
		if err != nil || rp < 1 || rp > 65535 {
			return nil, bad("RAFTPORT out of range 1..65535")
		}
		cp, err := strconv.Atoi(chp)
		if err != nil || cp < 1 || cp > 65533 {
			return nil, bad("CHPPORT out of range 1..65533 (P+2 must be a port too)")
		}
		out = append(out, ClusterPeer{Name: name, Host: host, RaftPort: rp, Port: cp})
	}
	if len(out) == 0 {
		return nil, errors.New("no nodes listed")
	}
	return out, nil
}

// self returns this node's entry.
func (c *ClusterConfig) self() (ClusterPeer, bool) {
	for _, p := range c.Peers {
		if p.Name == c.Node {
			return p, true
		}
	}
	return ClusterPeer{}, false
}

// peer returns the entry named name.
func (c *ClusterConfig) peer(name string) (ClusterPeer, bool) {
	for _, p := range c.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return ClusterPeer{}, false
}

// Validate checks the peer list and this node's place in it. Ports
// overlapping on one host are refused: each node's raft port and its
// three clone ports must be its own.
func (c *ClusterConfig) Validate() error {
	if len(c.Peers) == 0 {
		return errors.New("cluster: no nodes listed")
	}
	names := map[string]bool{}
	type hostPort struct {
		host string
		port int
	}
	owner := map[hostPort]string{}
	for _, p := range c.Peers {
		if names[p.Name] {
			return fmt.Errorf("cluster: node name %q listed twice", p.Name)
		}
		names[p.Name] = true
		ports := []int{p.RaftPort, p.Port, p.Port + 1, p.Port + 2}
		for i, port := range ports {
			k := hostPort{strings.ToLower(p.Host), port}
			if o, taken := owner[k]; taken {
				what := "raft port"
				if i > 0 {
					what = fmt.Sprintf("clone port P+%d", i-1)
				}
				return fmt.Errorf("cluster: %s %s:%d of node %q is also used by node %q", what, p.Host, port, p.Name, o)
			}
			owner[k] = p.Name
		}
	}
	if c.Node == "" {
		return errors.New("cluster: this node's name is not set (--node)")
	}
	if _, ok := c.self(); !ok {
		list := make([]string, len(c.Peers))
		for i, p := range c.Peers {
			list[i] = p.Name
		}
		return fmt.Errorf("cluster: node %q is not in the list (%s)", c.Node, strings.Join(list, ", "))
	}
	for key, d := range map[string]time.Duration{"heartbeat timeout": c.HeartbeatTimeout, "election timeout": c.ElectionTimeout,
		"leader lease timeout": c.LeaderLeaseTimeout, "catch-up timeout": c.CatchUpTimeout} {
		if d < 0 {
			return fmt.Errorf("cluster: %s must not be negative", key)
		}
	}
	return nil
}

// raftConfig fills the cluster fields of the raft node's configuration.
func (c *ClusterConfig) raftConfig(rc *raftlog.Config) {
	if c == nil {
		return
	}
	rc.NodeID = c.Node
	for _, p := range c.Peers {
		rc.Peers = append(rc.Peers, raftlog.Peer{ID: p.Name, Addr: p.RaftAddr()})
	}
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout
	rc.CatchUpTimeout, rc.MaxLag = c.CatchUpTimeout, c.MaxLag
}

// tellLeadership has the node report every change of leadership to the
// proposer and the reaper (after LogReady, so they hear it second).
func (s *Server) tellLeadership(root *actor.RootContext, p *pids, node *raftlog.Node) {
	node.OnLeadership(func(l raftlog.Leader) {
		m := s.cfg.Cluster.leadership(l)
		for _, pid := range []*actor.PID{p.proposer, p.reaper} {
			if pid != nil {
				root.Send(pid, m)
			}
		}
	})
}

// leadership is the actors' message for l: the leader's collector endpoint
// when another node leads (c nil: a single node).
func (c *ClusterConfig) leadership(l raftlog.Leader) *actors.Leadership {
	m := &actors.Leadership{Self: l.Self, Leader: l.ID, Term: l.Term}
	if c != nil && !l.Self && l.ID != "" {
		if peer, ok := c.peer(l.ID); ok {
			m.Collector = peer.Collector()
		}
	}
	return m
}

// ClusterStatus is one node's view of its cluster (GET /v1/cluster on
// clonesrv's --http listener, clonecli cluster status).
type ClusterStatus struct {
	Node string `json:"node"`
	// Role is leader, follower, candidate or shutdown.
	Role   string `json:"role"`
	Term   uint64 `json:"term"`
	Leader string `json:"leader"`
	// Endpoint is this node's clone base address; HTTP its --http
	// listener (set by clonesrv).
	Endpoint string `json:"endpoint"`
	HTTP     string `json:"http,omitempty"`
	History  string `json:"history"`
	// CommitIndex and AppliedIndex are this node's raft indexes;
	// LeaderCommitIndex the leader's commit index as last heard, and Lag
	// the entries between it and AppliedIndex.
	CommitIndex       uint64 `json:"commit_index"`
	AppliedIndex      uint64 `json:"applied_index"`
	LastIndex         uint64 `json:"last_index"`
	LeaderCommitIndex uint64 `json:"leader_commit_index"`
	Lag               uint64 `json:"lag"`
	// AppliedSequence is the store's sequence (the same on every node for
	// the same applied index).
	AppliedSequence int64 `json:"applied_sequence"`
	// LastContactMillis is how long ago the node heard from the leader
	// (0 on the leader; -1: never).
	LastContactMillis int64 `json:"last_contact_ms"`
	Elections         int64 `json:"elections"`
	LeaderChanges     int64 `json:"leader_changes"`
	Ready             bool  `json:"ready"`
	// NotReady says why not.
	NotReady string              `json:"not_ready,omitempty"`
	Peers    []ClusterPeerStatus `json:"peers"`
}

// ClusterPeerStatus is another node as this one knows it. The replication
// figures (Known) come from the leader only.
type ClusterPeerStatus struct {
	Name     string `json:"name"`
	Raft     string `json:"raft"`
	Endpoint string `json:"endpoint"`
	// Known: this node leads and has heard from the peer.
	Known             bool   `json:"known"`
	LastIndex         uint64 `json:"last_index"`
	Lag               uint64 `json:"lag"`
	LastContactMillis int64  `json:"last_contact_ms"`
}

// ClusterStatus returns this node's view of the cluster; nil for a single
// node, and before the log is open.
func (s *Server) ClusterStatus() *ClusterStatus {
	cs := s.stats.Cluster.Load()
	if cs == nil || s.cfg.Cluster == nil {
		return nil
	}
	ago := func(t time.Time) int64 {
		if t.IsZero() {
			return -1
		}
		return max(cs.Sampled.Sub(t).Milliseconds(), 0)
	}
	out := &ClusterStatus{
		Node: cs.Node, Role: cs.Role, Term: cs.Term, Leader: cs.Leader, History: s.History(),
		CommitIndex: cs.CommitIndex, AppliedIndex: cs.AppliedIndex, LastIndex: cs.LastIndex,
		LeaderCommitIndex: cs.LeaderCommitIndex, Lag: cs.Lag, AppliedSequence: s.stats.Sequence.Load(),
		LastContactMillis: ago(cs.LastContact), Elections: cs.Elections, LeaderChanges: cs.LeaderChanges,
		NotReady: cs.NotReady, Ready: cs.NotReady == "", Peers: []ClusterPeerStatus{},
	}
	if self, ok := s.cfg.Cluster.self(); ok {
		out.Endpoint = self.Endpoint()
	}
	for _, p := range cs.Peers {
		ps := ClusterPeerStatus{Name: p.Name, Raft: p.Addr, Known: p.Known}
		if peer, ok := s.cfg.Cluster.peer(p.Name); ok {
			ps.Endpoint = peer.Endpoint()
		}
		if p.Known {
			ps.LastIndex, ps.Lag, ps.LastContactMillis = p.LastIndex, p.Lag, ago(p.LastContact)
		}
		out.Peers = append(out.Peers, ps)
	}
	return out
}

// ClusterReady is nil when this node may take clients: a single node, or a
// cluster node that has a leader, hears from it and is not lagging behind
// it by more than ClusterConfig.MaxLag entries. Otherwise it says why.
func (s *Server) ClusterReady() error {
	if s.cfg.Cluster == nil {
		return nil
	}
	cs := s.stats.Cluster.Load()
	switch {
	case cs == nil:
		return errors.New("cluster: starting")
	case cs.NotReady != "":
		return errors.New("cluster: " + cs.NotReady)
	}
	return nil
}

// FetchClusterStatus asks the clonesrv whose --http listener is at addr
// ("host:port" or a URL) for its ClusterStatus (GET /v1/cluster). hc bounds
// the wait (its Timeout) unless ctx does first.
func FetchClusterStatus(ctx context.Context, hc *http.Client, addr string) (*ClusterStatus, error) {
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/v1/cluster", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var st ClusterStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("not a cluster status: %w", err)
	}
	if st.Node == "" {
		return nil, errors.New("not a cluster status: no node name")
	}
	return &st, nil
}
