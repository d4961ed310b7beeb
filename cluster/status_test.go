package cluster

import (
	"fmt"
	"testing"
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

// writesRefused is how many client updates n has not taken because it
// could not reach a leader (refused, or held back in its bounded queue),
// from its metrics.
func (n *node) writesRefused(t testing.TB) float64 {
	t.Helper()
	var sum float64
	for _, m := range refusedMetrics {
		v, _, err := n.metric(m)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// refusedMetrics are the samples writesRefused adds up.
var refusedMetrics = []string{`clonekv_updates_rejected_total{source="collector",reason="no_leader"}`}
