package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/clonekv/clonekv/client"
)

// follower is anything that holds a copy of the server's map: a replica
// or a clonekv client.
type follower struct {
	name  string
	state func() (followerState, error)
}

// followerState is a follower's sequence and a digest of its map.
type followerState struct {
	Seq    int64  `json:"seq"`
	Keys   int    `json:"keys"`
	Digest string `json:"digest"`
}

func stateOf(seq int64, m map[string]string) followerState {
	return followerState{Seq: seq, Keys: len(m), Digest: digest(m)}
}

// digest is a hash of a map's keys and values in key order.
func digest(m map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(m[k]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func replicaFollower(i int, r *replica) follower {
	return follower{name: fmt.Sprintf("replica %d", i), state: func() (followerState, error) {
		st, err := r.State(5 * time.Second)
		return stateOf(st.Seq, st.Map), err
	}}
}

func clientFollower(i int, c *client.Client) follower {
	return follower{name: fmt.Sprintf("client %d", i), state: func() (followerState, error) {
		s := c.Snapshot()
		return stateOf(s.Seq, s.Map()), nil
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
