package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/clonekv/clonekv/server"
)

// fetchClusterStatus asks the node whose --http listener is on httpPort
// for its cluster status.
func fetchClusterStatus(httpPort int) (*server.ClusterStatus, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	return server.FetchClusterStatus(context.Background(), hc, fmt.Sprintf("127.0.0.1:%d", httpPort))
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
