package reliability

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"clonekv/client"
)

// follower is anything that holds a copy of the server's map: a replica
// or a clonekv client.
type follower struct {
	name  string
	state func() (seq int64, m map[string]string, err error)
}

func replicaFollower(i int, r *replica) follower {
	return follower{name: fmt.Sprintf("replica %d", i), state: func() (int64, map[string]string, error) {
		st, err := r.State(5 * time.Second)
		return st.Seq, st.Map, err
	}}
}

func clientFollower(i int, c *client.Client) follower {
	return follower{name: fmt.Sprintf("client %d", i), state: func() (int64, map[string]string, error) {
		s := c.Snapshot()
		return s.Seq, s.Map(), nil
	}}
}

// dialClient joins a clonekv client (the whole map, every sequence seen so
// every loss is detected) to the server at port; it is closed when the test
// ends.
func dialClient(t testing.TB, port int, heartbeat time.Duration) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		Endpoints:        []string{endpoint(port, 0)},
		HeartbeatTimeout: heartbeat,
		JoinTimeout:      heartbeat,
		Logger:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
