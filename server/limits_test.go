package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
)

// logBuffer collects a server's log lines for a test to look for.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// has reports whether some line contains every one of parts.
func (b *logBuffer) has(parts ...string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
lines:
	for _, line := range strings.Split(b.buf.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		return true
	}
	return false
}

func (s *Server) peersOf(socket string) SocketPeers {
	for _, p := range s.Peers() {
		if p.Socket == socket {
			return p
		}
	}
	return SocketPeers{}
}

// TestInputLimits is issue 11's behaviour 5: an oversized properties
// frame, a 6 MiB frame (over the collector's ZMQ_MAXMSGSIZE, which makes
// libzmq drop the connection) and an update past --max-keys are each
// rejected, counted with a reason and logged, and the server keeps serving.
func TestInputLimits(t *testing.T) {
	logs := &logBuffer{}
	const maxKeys = 5
	srv := startServer(t, Config{Limits: kvmsg.Limits{MaxProps: 1024}, MaxKeys: maxKeys,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	p := newPeer(t, srv.Port())
	push, sub, dealer := p.push(), p.sub("/ok/", "/k/"), p.dealer()
	subscribed(t, push, sub, "/ok/ping")

	t.Run("properties over --max-props", func(t *testing.T) {
		set(t, push, "/bad/props", "v", "pad", strings.Repeat("p", 4096))
		waitFor(t, 5*time.Second, "props_too_long counted", func() bool {
			return rejectCount(srv, stats.SourceCollector, string(kvmsg.ReasonPropsTooLong)) == 1
		})
		waitFor(t, 5*time.Second, "props_too_long logged", func() bool {
			return logs.has("rejected input", "reason="+string(kvmsg.ReasonPropsTooLong))
		})
		stillServes(t, srv, push, sub, dealer, 0)
	})

	t.Run("6 MiB frame", func(t *testing.T) {
		before := srv.peersOf("collector").Closed
		big := p.push()
		send(t, big, []byte("/bad/big"), make([]byte, 8), nil, nil, make([]byte, 6<<20))
		waitFor(t, 10*time.Second, "the connection's drop counted", func() bool {
			return srv.peersOf("collector").Closed > before
		})
		waitFor(t, 5*time.Second, "the drop logged", func() bool {
			return logs.has("connection closed", "socket=collector")
		})
		stillServes(t, srv, push, sub, dealer, 1)
		// The dropped sender reconnects and is served too.
		set(t, big, "/ok/after-drop", "v")
		if m := recvMsg(t, sub, 10*time.Second); string(m.Key) != "/ok/after-drop" {
			t.Fatalf("after the drop: KVPUB %q, want /ok/after-drop", m.Key)
		}
	})

	t.Run("--max-keys reached", func(t *testing.T) {
		st := srv.Stats()
		for i := st.Keys.Load(); i < maxKeys; i++ {
			set(t, push, fmt.Sprintf("/k/%d", i), "v")
			recvMsg(t, sub, 5*time.Second)
		}
		seq, accepted := st.Sequence.Load(), st.UpdatesAccepted.Load()
		set(t, push, "/k/over", "v")
		waitFor(t, 5*time.Second, "max_keys counted", func() bool {
			return rejectCount(srv, stats.SourceCollector, actors.ReasonMaxKeys) == 1
		})
		waitFor(t, 5*time.Second, "max_keys logged", func() bool {
			return logs.has("rejected input", "reason="+actors.ReasonMaxKeys)
		})
		if st.Sequence.Load() != seq || st.UpdatesAccepted.Load() != accepted || st.Keys.Load() != maxKeys {
			t.Fatalf("the refused update changed the store: seq %d→%d, accepted %d→%d, keys %d",
				seq, st.Sequence.Load(), accepted, st.UpdatesAccepted.Load(), st.Keys.Load())
		}
		// Full, the server still takes overwrites and deletes, and a key
		// once one is free.
		stillServes(t, srv, push, sub, dealer, 0) // overwrites /ok/000
		set(t, push, "/ok/000", "")
		if m := recvMsg(t, sub, 5*time.Second); string(m.Key) != "/ok/000" || !m.IsDelete() {
			t.Fatalf("delete when full: KVPUB %q body %q", m.Key, m.Body)
		}
		set(t, push, "/k/over", "v")
		if m := recvMsg(t, sub, 5*time.Second); string(m.Key) != "/k/over" {
			t.Fatalf("after a delete: KVPUB %q, want /k/over", m.Key)
		}
	})
	if snap, _ := snapshot(t, dealer, "/bad/", 3*time.Second); len(snap) != 0 {
		t.Errorf("rejected updates were stored: %v", keys(snap))
	}
}
