package cluster

import (
	"fmt"
	"testing"
)

// roleLeader is the role a leading node reports.
const roleLeader = "leader"

// nodeStatus is what a node says of itself and the cluster: the part of
// GET /v1/cluster on its --http listener (server.ClusterStatus) the tests
// read.
type nodeStatus struct {
	Node              string `json:"node"`
	Role              string `json:"role"`
	Term              uint64 `json:"term"`
	Leader            string `json:"leader"`
	History           string `json:"history"`
	CommitIndex       uint64 `json:"commit_index"`
	AppliedIndex      uint64 `json:"applied_index"`
	LeaderCommitIndex uint64 `json:"leader_commit_index"`
	Lag               uint64 `json:"lag"`
	AppliedSequence   int64  `json:"applied_sequence"`
	Elections         int64  `json:"elections"`
	LeaderChanges     int64  `json:"leader_changes"`
	Ready             bool   `json:"ready"`
	NotReady          string `json:"not_ready"`
}

// status asks n for its cluster status.
func (n *node) status() (nodeStatus, error) {
	var st nodeStatus
	if err := jsonGet(n.httpURL("/v1/cluster"), &st); err != nil {
		return st, fmt.Errorf("%s status: %w", n.name, err)
	}
	return st, nil
}

// writesRefused is how many client updates n holds back or gave up
// because it knows no leader: its forward queue (updates) plus what the
// forwarder dropped for a full queue, from its metrics.
func (n *node) writesRefused(t testing.TB) float64 {
	t.Helper()
	var sum float64
	for _, m := range []string{`clonekv_forward_queue{unit="updates"}`, `clonekv_forward_dropped_total{reason="queue_full"}`} {
		v, _, err := n.metric(m)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}
