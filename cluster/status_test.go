package cluster

import (
	"fmt"
)

// roleLeader is the role a leading node reports.
const roleLeader = "leader"

// nodeStatus is what a node says of itself and the cluster (cluster-core's
// stats.Cluster, as the node serves it over HTTP).
type nodeStatus struct {
	Node              string
	Role              string
	Term              uint64
	Leader            string
	CommitIndex       uint64
	AppliedIndex      uint64
	LeaderCommitIndex uint64
	Lag               uint64
	Elections         int64
	LeaderChanges     int64
	NotReady          string
}

// status asks n for its cluster status.
func (n *node) status() (nodeStatus, error) {
	var st nodeStatus
	if err := jsonGet(n.httpURL("/v1/cluster"), &st); err != nil {
		return st, fmt.Errorf("%s status: %w", n.name, err)
	}
	return st, nil
}
