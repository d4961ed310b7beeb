package stats

import "time"

// Cluster is what a cluster node knows of the raft cluster, sampled by the
// raft node (about ten times a second) into Server.Cluster. A single node
// has none (Server.Cluster holds nil).
type Cluster struct {
	Node string // this node's name
	// Role is "leader", "follower", "candidate" or "shutdown".
	Role string
	Term uint64
	// Leader and LeaderAddr name the leader and its raft address ("" while
	// none is known).
	Leader, LeaderAddr string
	// CommitIndex, AppliedIndex and LastIndex are this node's raft figures;
	// LeaderCommitIndex is the leader's commit index as this node last
	// heard it (the leader's own commit index on the leader).
	CommitIndex, AppliedIndex, LastIndex, LeaderCommitIndex uint64
	// Lag is LeaderCommitIndex minus AppliedIndex, in log entries.
	Lag uint64
	// LastContact is when this node last heard from the leader (the
	// sample's time on the leader; zero: never).
	LastContact time.Time
	// Elections counts the elections this node started (it became a
	// candidate); LeaderChanges the changes of leader it saw.
	Elections, LeaderChanges int64
	// NotReady says why the node should not take clients now ("" when
	// ready): no leader, no contact with the leader, or lagging.
	NotReady string
	// Peers are the other voters; the replication figures are known on the
	// leader only.
	Peers []ClusterPeer
	// Sampled is when these figures were read.
	Sampled time.Time
}

// ClusterPeer is one other voter as this node sees it.
type ClusterPeer struct {
	Name string
	Addr string // raft address HOST:RAFTPORT
	// LastIndex is the peer's last log index as the leader last heard it,
	// at LastContact; Lag is the leader's last index minus it. Known on the
	// leader only (Known false elsewhere).
	Known       bool
	LastIndex   uint64
	Lag         uint64
	LastContact time.Time
}
