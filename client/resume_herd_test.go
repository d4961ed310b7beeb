package client

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/stats"
)

// TestResumeHerd is issue 14 behaviour 5: clients following a durable
// server all reconnect at once when it restarts (same data directory,
// same port), and every one of them resumes: the restarted server streams
// no whole snapshot. It reports the server's load: resume replies,
// messages and bytes, against what whole snapshots would have cost.
// herdClients and herdKeys are reduced in make test; -tags soak runs 300
// clients of 100,000 keys.
func TestResumeHerd(t *testing.T) {
	t.Parallel()
	port, dir := testkit.FreePorts(t), t.TempDir()
	cfg := server.Config{Port: port, Log: server.LogConfig{DataDir: dir}}
	srv := startServer(t, cfg)
	push := newRawPeer(t).pusher(port)
	fillServer(t, srv, push, herdKeys)

	clients := make([]*Client, herdClients)
	var wg sync.WaitGroup
	// The first join is a herd of whole snapshots (30 M KVSYNCs at the
	// soak's size, about 70 s of this 2-core machine for raw receivers):
	// bounded generously, it is not what this test is about.
	joinWithin := max(time.Duration(herdClients*herdKeys/10000)*time.Second, 120*time.Second)
	joinStart := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients[i] = dialWithin(t, Options{Endpoints: []string{srv.endpoint()}, HeartbeatTimeout: 2 * time.Second, JoinTimeout: 20 * time.Second}, joinWithin)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d clients joined %d keys in %v", herdClients, herdKeys, time.Since(joinStart).Round(time.Millisecond))
	seq := srv.Stats().Sequence.Load()

	srv.stop(t)
	restarted := time.Now()
	var again *testServer
	waitFor(t, 30*time.Second, "the server restarted on its port", func() bool {
		s, err := server.New(withTestDefaults(cfg))
		if err != nil {
			return false
		}
		again = &testServer{Server: s, run: testkit.Serve(t, s, 15*time.Second)}
		return true
	})
	// Updates right after the restart: some clients get them in their
	// delta, the others on their subscriber.
	push2 := newRawPeer(t).pusher(port)
	setEach(t, push2, 100, "/r/%06d", "after")
	top := seq + 100
	waitFor(t, 120*time.Second, "every client resumed and at the server's sequence", func() bool {
		for _, c := range clients {
			if st := c.Stats(); !st.Synced || st.Seq < top || st.Joins < 2 {
				return false
			}
		}
		return true
	})
	took := time.Since(restarted)
	var errs []error
	var bytes, msgs int64
	for i, c := range clients {
		st := c.Stats()
		bytes += st.RejoinBytes
		msgs += st.RejoinMessages
		if st.Resumes != 1 || st.FullResyncs != 0 {
			errs = append(errs, fmt.Errorf("client %d: %d resumes, %d full (%v); last join %+v", i, st.Resumes, st.FullResyncs, st.FullReasons, st.LastJoin))
		}
	}
	ss := again.Stats()
	t.Logf("after the restart: %d clients back at %d in %v; server: %d delta resumes, %d full (%v), %d resume messages, %d resume bytes, %d KVSYNCs sent in all (deltas included), %d KTHXBAIs, %d refused; clients received %d messages, %d bytes (a whole snapshot each would be about %d messages)",
		herdClients, top, took.Round(time.Millisecond), ss.Resumes.Get("delta"), herdClients-int(ss.Resumes.Get("delta")), ss.Resumes.All(),
		ss.ResumeMessages.Get("delta"), ss.ResumeBytes.Get("delta"), ss.SnapshotKeys.Load(), ss.SnapshotsServed.Load(), sumCounts(ss.SnapshotRefusals.All()),
		msgs, bytes, int64(herdClients)*int64(herdKeys+1))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := ss.Resumes.Get("delta"); n != int64(herdClients) {
		t.Fatalf("the server answered %d delta resumes, want %d", n, herdClients)
	}
}

// withTestDefaults is what startServer sets on a Config.
func withTestDefaults(cfg server.Config) server.Config {
	cfg.Bind = "127.0.0.1"
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 100 * time.Millisecond
	}
	cfg.Logger = testLogger()
	return cfg
}

func sumCounts(cs []stats.Count) int64 {
	var n int64
	for _, c := range cs {
		n += c.Count
	}
	return n
}
