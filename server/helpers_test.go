package server

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// testLogger writes server logs to the test log only when -v is given.
func testLogger(t testing.TB) *slog.Logger { return testkit.Logger(slog.LevelDebug) }

// startServer runs a server on 127.0.0.1 and a free port triple until the
// test ends.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.Bind = "127.0.0.1"
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	// make test-durable runs the server tests on a data directory.
	if os.Getenv("CLONEKV_TEST_DURABLE") != "" && cfg.Log.DataDir == "" {
		cfg.Log.DataDir = t.TempDir()
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	testkit.Serve(t, srv, 15*time.Second)
	return srv
}

// peer is a raw test client: its sockets are used only by the test's
// goroutine.
type peer struct {
	t     testing.TB
	zctx  *zmq.Context
	port  int
	socks []*zmq.Socket
}

func newPeer(t testing.TB, port int) *peer {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, zctx: zctx, port: port}
	t.Cleanup(p.close)
	return p
}

func (p *peer) close() {
	for _, s := range p.socks {
		s.Close()
	}
	p.socks = nil
	p.zctx.Term()
}

func (p *peer) connect(t zmq.Type, offset int, opts transport.Options) *zmq.Socket {
	p.t.Helper()
	s, err := transport.Connect(p.zctx, t, fmt.Sprintf("tcp://127.0.0.1:%d", p.port+offset), opts)
	if err != nil {
		p.t.Fatal(err)
	}
	p.socks = append(p.socks, s)
	return s
}

func (p *peer) dealer() *zmq.Socket { return p.connect(zmq.DEALER, 0, transport.Options{}) }
func (p *peer) push() *zmq.Socket   { return p.connect(zmq.PUSH, 2, transport.Options{}) }
func (p *peer) sub(prefixes ...string) *zmq.Socket {
	return p.connect(zmq.SUB, 1, transport.Options{Subscribe: prefixes, RcvHWM: 1 << 20})
}

// send sends frames or fails the test.
func send(t testing.TB, s *zmq.Socket, frames ...[]byte) {
	t.Helper()
	if err := transport.SendMessage(s, frames, 0); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// set sends a KVSET.
func set(t testing.TB, s *zmq.Socket, key, body string, props ...string) {
	t.Helper()
	m := kvmsg.Msg{Key: []byte(key), Body: []byte(body)}
	for i := 0; i+1 < len(props); i += 2 {
		m = m.SetProp(props[i], props[i+1])
	}
	send(t, s, m.Frames()...)
}

// recv receives one message within d.
func recv(t testing.TB, s *zmq.Socket, d time.Duration) [][]byte {
	t.Helper()
	frames, err := testkit.RecvWithin(s, d)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return frames
}

// recvMsg receives one Clone message within d, skipping HUGZ.
func recvMsg(t testing.TB, s *zmq.Socket, d time.Duration) kvmsg.Msg {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		frames := recv(t, s, time.Until(deadline))
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if string(m.Key) == kvmsg.KeyHeartbeat {
			continue
		}
		return m
	}
}

// snapshot joins through a DEALER and returns the KVSYNCs and the KTHXBAI.
func snapshot(t testing.TB, dealer *zmq.Socket, subtree string, d time.Duration) ([]kvmsg.Msg, kvmsg.Msg) {
	t.Helper()
	send(t, dealer, []byte(kvmsg.CmdSnapshot), []byte(subtree))
	var got []kvmsg.Msg
	deadline := time.Now().Add(d)
	for {
		frames := recv(t, dealer, time.Until(deadline))
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatalf("snapshot decode: %v", err)
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			return got, m
		}
		got = append(got, m)
	}
}

// waitFor polls cond every 5ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, 5*time.Millisecond, what, cond)
}

// subscribed waits until a SUB socket really receives: it sets a key
// until the KVPUB arrives (a SUB's subscription reaches the PUB
// asynchronously).
func subscribed(t testing.TB, push, sub *zmq.Socket, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		set(t, push, key, "ping")
		frames, err := testkit.RecvWithin(sub, 100*time.Millisecond)
		if err == nil && len(frames) > 0 && string(frames[0]) == key {
			// drain any further pings
			for {
				if _, err := testkit.RecvWithin(sub, 50*time.Millisecond); err != nil {
					return
				}
			}
		}
	}
	t.Fatal("subscriber never received")
}

type zsock = *zmq.Socket
