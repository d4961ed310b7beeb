package reliability

import (
	"syscall"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// TestZMTPHeartbeatDropsStoppedProcess: a clonekv client process stopped
// with SIGSTOP answers no ZMTP PING, so the server drops its connections on
// the publisher and the collector within the heartbeat timeout; continued, the client
// connects again.
func TestZMTPHeartbeatDropsStoppedProcess(t *testing.T) {
	const ivl, timeout = 200 * time.Millisecond, time.Second
	srv := startServer(t, server.Config{ZMTPHeartbeat: ivl, ZMTPHeartbeatTimeout: timeout})
	cp := startClientProc(t, srv.Port())
	peers := func() map[string]server.SocketPeers {
		out := map[string]server.SocketPeers{}
		for _, p := range srv.Peers() {
			out[p.Socket] = p
		}
		return out
	}
	// The client keeps its SUB and PUSH; its DEALER lives for one snapshot.
	sockets := []string{"publisher", "collector"}
	defer func() {
		if t.Failed() {
			t.Logf("peers: %+v", srv.Peers())
		}
	}()
	waitFor(t, 15*time.Second, "the client connected to the publisher and the collector", func() bool {
		p := peers()
		for _, s := range sockets {
			if p[s].Connected < 1 {
				return false
			}
		}
		return true
	})
	before := peers()
	cp.signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	waitFor(t, 5*timeout+10*time.Second, "the stopped client's connections dropped", func() bool {
		p := peers()
		for _, s := range sockets {
			if p[s].Closed <= before[s].Closed || p[s].Connected != 0 {
				return false
			}
		}
		return true
	})
	took := time.Since(stopped)
	t.Logf("stopped client dropped from the publisher and the collector %v after SIGSTOP (interval %v, timeout %v)", took.Round(time.Millisecond), ivl, timeout)
	if took < timeout/2 {
		t.Errorf("dropped after %v, before the heartbeat timeout %v could pass", took, timeout)
	}
	cp.signal(t, syscall.SIGCONT)
	waitFor(t, 15*time.Second, "the continued client connected again", func() bool {
		p := peers()
		for _, s := range sockets {
			if p[s].Connected < 1 {
				return false
			}
		}
		return true
	})
}
