package baseline_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/bench/baseline"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// start runs a baseline server at a free port until the test ends, and
// checks that it stops promptly.
func start(t *testing.T) *baseline.Server {
	t.Helper()
	srv, err := baseline.New(baseline.Config{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	testkit.Serve(t, srv, 2*time.Second)
	return srv
}

// peer is a set of client sockets in one context, all used by the test
// goroutine only.
type peer struct {
	t     *testing.T
	zctx  *zmq.Context
	socks []*zmq.Socket
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatalf("new context: %v", err)
	}
	p := &peer{t: t, zctx: zctx}
	t.Cleanup(func() {
		for _, s := range p.socks {
			_ = s.SetLinger(transport.MinLinger)
			_ = s.Close()
		}
		_ = p.zctx.Term()
	})
	return p
}

// connect opens a socket of type typ connected to 127.0.0.1:port; a SUB
// subscribes to each of subs.
func (p *peer) connect(typ zmq.Type, port int, subs ...string) *zmq.Socket {
	p.t.Helper()
	s, err := p.zctx.NewSocket(typ)
	if err != nil {
		p.t.Fatalf("new socket: %v", err)
	}
	p.socks = append(p.socks, s)
	if err := s.SetLinger(transport.MinLinger); err != nil {
		p.t.Fatal(err)
	}
	for _, sub := range subs {
		if err := s.SetSubscribe(sub); err != nil {
			p.t.Fatal(err)
		}
	}
	if err := s.Connect(fmt.Sprintf("tcp://127.0.0.1:%d", port)); err != nil {
		p.t.Fatal(err)
	}
	return s
}

// send sends frames as one message.
func send(t *testing.T, s *zmq.Socket, frames ...[]byte) {
	t.Helper()
	if _, err := s.SendMessage(frames); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// recv waits up to d for one message; ok is false on timeout.
func recv(t *testing.T, s *zmq.Socket, d time.Duration) (frames [][]byte, ok bool) {
	t.Helper()
	p := zmq.NewPoller()
	p.Add(s, zmq.POLLIN)
	polled, err := p.Poll(d)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	if len(polled) == 0 {
		return nil, false
	}
	frames, err = s.RecvMessageBytes(0)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return frames, true
}

// mustRecv is recv that fails the test on timeout.
func mustRecv(t *testing.T, s *zmq.Socket, what string) kvmsg.Msg {
	t.Helper()
	frames, ok := recv(t, s, 3*time.Second)
	if !ok {
		t.Fatalf("timed out waiting for %s", what)
	}
	m, err := kvmsg.Decode(frames, kvmsg.Limits{})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return m
}

// kvset encodes a client update.
func kvset(key, body, props string) [][]byte {
	return kvmsg.Msg{Key: []byte(key), Props: []byte(props), Body: []byte(body)}.Frames()
}

const probeKey = "/probe/"

// syncSub pushes probes until sub (which must subscribe to probeKey) sees
// them, and returns the sequence of the last probe: from then on the server's
// sequence is known and sub misses nothing.
func syncSub(t *testing.T, push, sub *zmq.Socket) int64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := -1
	for time.Now().Before(deadline) {
		last++
		send(t, push, kvset(probeKey, strconv.Itoa(last), "")...)
		for {
			frames, ok := recv(t, sub, 30*time.Millisecond)
			if !ok {
				break // no probe yet: send another
			}
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			if err != nil || string(m.Key) != probeKey {
				continue
			}
			if string(m.Body) == strconv.Itoa(last) {
				return m.Seq
			}
			// An older probe: the newest one follows in order.
			deadline = time.Now().Add(3 * time.Second)
		}
	}
	t.Fatal("subscriber never saw a probe")
	return 0
}

// snapshot sends ICANHAZ? on dealer and returns the KVSYNCs and the KTHXBAI.
func snapshot(t *testing.T, dealer *zmq.Socket, subtree string) (map[string]kvmsg.Msg, kvmsg.Msg) {
	t.Helper()
	send(t, dealer, []byte(kvmsg.CmdSnapshot), []byte(subtree))
	got := make(map[string]kvmsg.Msg)
	for {
		m := mustRecv(t, dealer, "snapshot")
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			return got, m
		}
		if _, dup := got[string(m.Key)]; dup {
			t.Errorf("snapshot sent %q twice", m.Key)
		}
		got[string(m.Key)] = m
	}
}
