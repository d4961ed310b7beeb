package server

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// lockedBuffer is a log sink the server's goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func keypair(t *testing.T) (pub, sec string) {
	t.Helper()
	pub, sec, err := zmq.NewCurveKeypair()
	if err != nil {
		t.Fatal(err)
	}
	return pub, sec
}

func (s *Server) authRejects(reason string) int64 {
	for _, r := range s.Stats().Rejects() {
		if r.Source == SourceAuth && r.Reason == reason {
			return r.Count
		}
	}
	return 0
}

// TestCurveAdmitsOnlyAllowedClients: with CURVE and an allow list, a
// client with an allowed key joins and updates; a client with an unknown
// key and a plaintext client get no snapshot and no update and change
// nothing, while the allowed client keeps being served; every refusal is
// counted and logged.
func TestCurveAdmitsOnlyAllowedClients(t *testing.T) {
	serverPub, serverSec := keypair(t)
	goodPub, goodSec := keypair(t)
	badPub, badSec := keypair(t)
	var logs lockedBuffer
	srv := startServer(t, Config{
		Curve:  &CurveConfig{SecretKey: serverSec, AllowedClients: []string{goodPub}},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})

	// The refused first, so they are hammering while the allowed one works.
	type intruder struct {
		name              string
		sub, dealer, push zsock
	}
	var intruders []intruder
	for _, in := range []struct {
		name string
		opts transport.Options
	}{
		{"unknown key", transport.Options{CurveClient: &transport.CurveClient{ServerKey: serverPub, PublicKey: badPub, SecretKey: badSec}}},
		{"plaintext", transport.Options{}},
	} {
		p := newPeer(t, srv.Port())
		subOpts := in.opts
		subOpts.Subscribe = []string{""}
		it := intruder{in.name, p.connect(zmq.SUB, 1, subOpts), p.connect(zmq.DEALER, 0, in.opts), p.connect(zmq.PUSH, 2, in.opts)}
		// DONTWAIT: once refused, these sockets have no peer and a
		// blocking send would never return.
		transport.SendMessage(it.push, kvmsg.Msg{Key: []byte("/evil/" + in.name), Body: []byte("x")}.Frames(), zmq.DONTWAIT)
		transport.SendMessage(it.dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), nil}, zmq.DONTWAIT)
		intruders = append(intruders, it)
	}

	good := newPeer(t, srv.Port())
	curve := transport.Options{CurveClient: &transport.CurveClient{ServerKey: serverPub, PublicKey: goodPub, SecretKey: goodSec}}
	subOpts := curve
	subOpts.Subscribe = []string{"/"}
	sub := good.connect(zmq.SUB, 1, subOpts)
	push := good.connect(zmq.PUSH, 2, curve)
	dealer := good.connect(zmq.DEALER, 0, curve)
	subscribed(t, push, sub, "/ping")
	set(t, push, "/a/1", "hello")
	if m := recvMsg(t, sub, 5*time.Second); string(m.Key) != "/a/1" || string(m.Body) != "hello" {
		t.Fatalf("allowed client got %q=%q, want /a/1=hello", m.Key, m.Body)
	}
	kvs, end := snapshot(t, dealer, "", 5*time.Second)
	if end.Seq != srv.Stats().Sequence.Load() {
		t.Errorf("KTHXBAI seq %d, server at %d", end.Seq, srv.Stats().Sequence.Load())
	}
	for _, m := range kvs {
		if strings.HasPrefix(string(m.Key), "/evil/") {
			t.Errorf("a refused client's update was stored: %q", m.Key)
		}
	}
	if len(kvs) != 2 {
		t.Errorf("snapshot has %d keys, want 2 (/ping, /a/1)", len(kvs))
	}

	waitFor(t, 5*time.Second, "refusals counted", func() bool {
		return srv.authRejects(ReasonUnknownKey) > 0 && srv.authRejects(ReasonHandshake) > 0
	})
	for _, it := range intruders {
		for name, s := range map[string]zsock{"sub": it.sub, "dealer": it.dealer} {
			if f, err := testkit.RecvWithin(s, 200*time.Millisecond); err == nil {
				t.Errorf("%s client's %s received %q", it.name, name, f)
			}
		}
	}
	// Still serving the allowed client after the refusals.
	set(t, push, "/a/2", "again")
	if m := recvMsg(t, sub, 5*time.Second); string(m.Key) != "/a/2" {
		t.Fatalf("allowed client got %q after the refusals, want /a/2", m.Key)
	}
	if got := srv.Stats().UpdatesAccepted.Load(); got != srv.Stats().Sequence.Load() {
		t.Errorf("accepted %d, sequence %d", got, srv.Stats().Sequence.Load())
	}
	log := logs.String()
	for _, want := range []string{"reason=" + ReasonUnknownKey, badPub, "reason=" + ReasonHandshake} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	var failed, handshakes int64
	for _, p := range srv.Peers() {
		failed += p.Failed
		handshakes += p.Handshakes
	}
	if failed < 2 || handshakes < 3 {
		t.Errorf("peers: %d failed, %d handshakes; want >= 2 and >= 3: %+v", failed, handshakes, srv.Peers())
	}
}

// TestCurveWithoutAllowList: CURVE alone encrypts and admits any client
// that knows the server key, and still refuses plaintext.
func TestCurveWithoutAllowList(t *testing.T) {
	serverPub, serverSec := keypair(t)
	anyPub, anySec := keypair(t)
	srv := startServer(t, Config{Curve: &CurveConfig{SecretKey: serverSec}})
	p := newPeer(t, srv.Port())
	curve := transport.Options{CurveClient: &transport.CurveClient{ServerKey: serverPub, PublicKey: anyPub, SecretKey: anySec}}
	push := p.connect(zmq.PUSH, 2, curve)
	dealer := p.connect(zmq.DEALER, 0, curve)
	set(t, push, "/k", "v")
	waitFor(t, 5*time.Second, "update stored", func() bool { return srv.Stats().Sequence.Load() == 1 })
	if kvs, _ := snapshot(t, dealer, "", 5*time.Second); len(kvs) != 1 {
		t.Errorf("snapshot has %d keys, want 1", len(kvs))
	}
	plain := newPeer(t, srv.Port()).dealer()
	transport.SendMessage(plain, [][]byte{[]byte(kvmsg.CmdSnapshot), nil}, zmq.DONTWAIT)
	if f, err := testkit.RecvWithin(plain, 300*time.Millisecond); err == nil {
		t.Errorf("plaintext client received %q", f)
	}
	waitFor(t, 5*time.Second, "plaintext refusal counted", func() bool { return srv.authRejects(ReasonHandshake) > 0 })
}

// TestCurveConfigErrors: bad keys are start-up errors.
func TestCurveConfigErrors(t *testing.T) {
	pub, sec := keypair(t)
	for _, tc := range []struct {
		name string
		c    CurveConfig
		want string
	}{
		{"empty secret", CurveConfig{}, "curve secret key: want 40 Z85 characters, got 0"},
		{"short secret", CurveConfig{SecretKey: sec[:39]}, "got 39"},
		{"bad allowed", CurveConfig{SecretKey: sec, AllowedClients: []string{pub, "nope"}}, `curve allowed client key "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			_, err := New(Config{Bind: "127.0.0.1", Curve: &c, Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
