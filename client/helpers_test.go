package client

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// testLogger writes logs to stderr only with -v.
func testLogger() *slog.Logger { return testkit.Logger(slog.LevelDebug) }

// testServer is an in-process server on 127.0.0.1 and a free port triple.
type testServer struct {
	*server.Server
	run *testkit.Running
}

func (s *testServer) endpoint() string { return fmt.Sprintf("tcp://127.0.0.1:%d", s.Port()) }

// stop stops the server (idempotent) and waits for it.
func (s *testServer) stop(t testing.TB) { s.run.Stop(t) }

func startServer(t testing.TB, cfg server.Config) *testServer {
	t.Helper()
	cfg.Bind = "127.0.0.1"
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 100 * time.Millisecond
	}
	cfg.Logger = testLogger()
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	return &testServer{Server: srv, run: testkit.Serve(t, srv, 15*time.Second)}
}

// dial joins with a test logger and fast timeouts, closing at the end.
func dial(t testing.TB, opts Options) *Client {
	t.Helper()
	return dialWithin(t, opts, 10*time.Second)
}

// dialWithin is dial waiting up to d for the first snapshot (large maps on
// a loaded machine).
func dialWithin(t testing.TB, opts Options, d time.Duration) *Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	if opts.HeartbeatTimeout == 0 {
		opts.HeartbeatTimeout = 500 * time.Millisecond
	}
	if opts.JoinTimeout == 0 {
		opts.JoinTimeout = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := Dial(ctx, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawPeer is a test-side socket owner: its sockets are used only by the
// test goroutine.
type rawPeer struct {
	t     testing.TB
	zctx  *zmq.Context
	socks []*zmq.Socket
}

func newRawPeer(t testing.TB) *rawPeer {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{t: t, zctx: zctx}
	t.Cleanup(func() {
		for _, s := range p.socks {
			s.Close()
		}
		zctx.Term()
	})
	return p
}

func (p *rawPeer) connect(typ zmq.Type, addr string, o transport.Options) *zmq.Socket {
	s, err := transport.Connect(p.zctx, typ, addr, o)
	if err != nil {
		p.t.Fatal(err)
	}
	p.socks = append(p.socks, s)
	return s
}

// pusher returns a PUSH to the collector of the server at base port.
func (p *rawPeer) pusher(port int) *zmq.Socket {
	return p.connect(zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", port+2), transport.Options{Linger: time.Second, SndHWM: 100000})
}

func set(t testing.TB, push *zmq.Socket, key, value string) {
	t.Helper()
	m := kvmsg.Msg{Key: []byte(key), Body: []byte(value)}
	if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// setEach sets the n keys fmt.Sprintf(format, i), i from 0, to value.
func setEach(t testing.TB, push *zmq.Socket, n int, format, value string) {
	t.Helper()
	for i := range n {
		set(t, push, fmt.Sprintf(format, i), value)
	}
}

// snapshotOf fetches a fresh snapshot (ICANHAZ? on a new DEALER) of subtree
// from the server at port: the reference a client must equal.
func snapshotOf(t testing.TB, port int, subtree string) (map[string]string, int64) {
	t.Helper()
	return snapshotWithin(t, port, subtree, 10*time.Second)
}

func snapshotWithin(t testing.TB, port int, subtree string, within time.Duration) (map[string]string, int64) {
	t.Helper()
	p := newRawPeer(t)
	d := p.connect(zmq.DEALER, fmt.Sprintf("tcp://127.0.0.1:%d", port), transport.Options{})
	return testkit.SnapshotMap(t, d, subtree, within)
}

// waitFor polls cond every 5ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, 5*time.Millisecond, what, cond)
}

// assertMatches waits until the client has applied the server's last
// sequence and then requires its map to equal a fresh snapshot at that same
// sequence: no silent divergence.
func assertMatches(t testing.TB, c *Client, port int, subtree string) {
	t.Helper()
	assertMatchesWithin(t, c, port, subtree, 10*time.Second)
}

// assertMatchesWithin is assertMatches with d for each snapshot and for
// the client to catch up (large maps on a loaded machine).
func assertMatchesWithin(t testing.TB, c *Client, port int, subtree string, d time.Duration) {
	t.Helper()
	var want map[string]string
	var seq int64
	var snap *Snapshot
	deadline := time.Now().Add(d)
	for {
		want, seq = snapshotWithin(t, port, subtree, d)
		st := c.Stats()
		if st.Synced && st.Seq == seq {
			// Updates still in flight may move the client on before its
			// snapshot is taken: then compare again at a later sequence.
			if snap = c.Snapshot(); snap.Seq == seq {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("client at seq %d (synced %v, %+v), server at %d", st.Seq, st.Synced, st, seq)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := snap.Map()
	if !maps.Equal(got, want) {
		t.Fatalf("client map at seq %d differs from the server's snapshot (%d vs %d keys):\n%s", seq, len(got), len(want), diffMaps(got, want))
	}
}

func diffMaps(got, want map[string]string) string {
	var lines []string
	for k, v := range got {
		if w, ok := want[k]; !ok || w != v {
			lines = append(lines, fmt.Sprintf("  %s: client %q, server %q (present %v)", k, v, w, ok))
		}
	}
	for k, w := range want {
		if _, ok := got[k]; !ok {
			lines = append(lines, fmt.Sprintf("  %s: missing in client, server %q", k, w))
		}
	}
	sort.Strings(lines)
	if len(lines) > 20 {
		lines = append(lines[:20], fmt.Sprintf("  ... %d more", len(lines)-20))
	}
	return strings.Join(lines, "\n")
}

// nextEvent returns the next event of the given type within d, skipping
// others.
func nextEvent(t testing.TB, ch <-chan Event, typ EventType, d time.Duration) Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed while waiting for %v", typ)
			}
			if ev.Type == typ {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %v event within %v", typ, d)
		}
	}
}
