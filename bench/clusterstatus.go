package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// clusterStatus is the part of a node's cluster status (its HTTP
// listener) that the cluster case reads.
type clusterStatus struct {
	Role   string
	Leader string
	Term   uint64
}

// fetchClusterStatus asks the node whose --http listener is on httpPort.
func fetchClusterStatus(httpPort int) (clusterStatus, error) {
	var st clusterStatus
	code, body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/v1/cluster", httpPort), 2*time.Second)
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("cluster status on :%d: %d %s", httpPort, code, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("cluster status on :%d: %w", httpPort, err)
	}
	return st, nil
}

// httpGet fetches url within d.
func httpGet(url string, d time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
