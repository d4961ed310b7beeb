package cluster

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// roleLeader is the role a leading node reports.
const roleLeader = "leader"

// nodeStatus is what a node says of itself and the cluster (GET
// /v1/cluster on its --http listener).
type nodeStatus = server.ClusterStatus

// status asks n for its cluster status.
func (n *node) status() (nodeStatus, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	st, err := server.FetchClusterStatus(context.Background(), hc, n.httpURL(""))
	if err != nil {
		return nodeStatus{}, fmt.Errorf("%s status: %w", n.name, err)
	}
	return *st, nil
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
