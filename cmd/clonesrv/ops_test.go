package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// syncBuffer collects a child's stderr while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeHTTPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(url string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metricValue finds one sample line "name{labels} value" in a scrape.
func metricValue(scrape, series string) (float64, bool) {
	for _, line := range strings.Split(scrape, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// TestServiceWithCurveAndHTTP runs clonesrv as an operator would: CURVE
// with an allow list from key files, the HTTP endpoints with pprof, all
// configured through the environment and a config file. The allowed
// client works; plaintext and unknown-key clients get nothing, and the
// refusals show in the log and in /metrics; SIGTERM stops it cleanly.
func TestServiceWithCurveAndHTTP(t *testing.T) {
	bin := buildServer(t)
	dir := t.TempDir()
	srvKeys, err := config.WriteKeyPair(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	client, err := config.WriteKeyPair(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := config.WriteKeyPair(dir, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	allow := filepath.Join(dir, "clients")
	os.Mkdir(allow, 0o755)
	pub, _ := os.ReadFile(filepath.Join(dir, "client.pub"))
	os.WriteFile(filepath.Join(allow, "client.pub"), pub, 0o644)
	port := testkit.FreePorts(t)
	httpAddr := freeHTTPAddr(t)
	conf := filepath.Join(dir, "clonekv.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("bind = \"127.0.0.1\"\nport = %d\ncurve-allow = %q\npprof = true\ndata-dir = %q\n", port, allow, filepath.Join(dir, "data"))), 0o644)

	var stderr syncBuffer
	cmd := exec.Command(bin, "--config", conf)
	cmd.Env = append(os.Environ(), "CLONEKV_CURVE_SECRET_KEY_FILE="+filepath.Join(dir, "server.key"), "CLONEKV_HTTP="+httpAddr)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	base := "http://" + httpAddr
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, err := get(base + "/readyz")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 in 10s (%d, %v); stderr:\n%s", code, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body, err := get(base + "/healthz"); err != nil || code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q %v", code, body, err)
	}
	if code, _, err := get(base + "/debug/pprof/"); err != nil || code != 200 {
		t.Errorf("/debug/pprof/: %d %v", code, err)
	}

	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	var socks []*zmq.Socket
	defer func() {
		for _, s := range socks {
			s.Close()
		}
		zctx.Term()
	}()
	dial := func(typ zmq.Type, offset int, kp *config.KeyPair) *zmq.Socket {
		opts := transport.Options{}
		if kp != nil {
			opts.CurveClient = &transport.CurveClient{ServerKey: srvKeys.Public, PublicKey: kp.Public, SecretKey: kp.Secret}
		}
		s, err := transport.Connect(zctx, typ, fmt.Sprintf("tcp://127.0.0.1:%d", port+offset), opts)
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, s)
		return s
	}
	snapshot := func(dealer *zmq.Socket, wait time.Duration) ([]string, error) {
		// Bounded both ways: a refused client's DEALER has no peer and
		// would block a send forever.
		if err := dealer.SetSndtimeo(wait); err != nil {
			return nil, err
		}
		if err := dealer.SetRcvtimeo(wait); err != nil {
			return nil, err
		}
		if err := transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), nil}, 0); err != nil {
			return nil, err
		}
		var keys []string
		for {
			f, _, err := transport.RecvMessage(dealer, 0, nil)
			if err != nil {
				return keys, err
			}
			if string(f[0]) == kvmsg.KeySnapshotEnd {
				return keys, nil
			}
			keys = append(keys, string(f[0]))
		}
	}

	// Refused clients first: they try to write and to join.
	for _, kp := range []*config.KeyPair{nil, &stranger} {
		transport.SendMessage(dial(zmq.PUSH, 2, kp), kvmsg.Msg{Key: []byte("/evil"), Body: []byte("x")}.Frames(), zmq.DONTWAIT)
	}
	plainDealer, strangerDealer := dial(zmq.DEALER, 0, nil), dial(zmq.DEALER, 0, &stranger)

	push := dial(zmq.PUSH, 2, &client)
	if err := transport.SendMessage(push, kvmsg.Msg{Key: []byte("/ok"), Body: []byte("1")}.Frames(), 0); err != nil {
		t.Fatal(err)
	}
	dealer := dial(zmq.DEALER, 0, &client)
	for deadline := time.Now().Add(10 * time.Second); ; {
		keys, err := snapshot(dealer, 2*time.Second)
		if err != nil {
			t.Fatalf("allowed client's snapshot: %v; stderr:\n%s", err, stderr.String())
		}
		if len(keys) == 1 && keys[0] == "/ok" {
			break
		}
		if len(keys) > 1 || time.Now().After(deadline) {
			t.Fatalf("allowed client's snapshot: %q, want [/ok]", keys)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, d := range map[string]*zmq.Socket{"plaintext": plainDealer, "unknown key": strangerDealer} {
		if keys, err := snapshot(d, 300*time.Millisecond); err == nil || len(keys) > 0 {
			t.Errorf("%s client got a snapshot: %q", name, keys)
		}
	}

	var scrape string
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, scrape, _ = get(base + "/metrics")
		a, _ := metricValue(scrape, `clonekv_updates_rejected_total{reason="handshake_failed",source="auth"}`)
		b, _ := metricValue(scrape, `clonekv_updates_rejected_total{reason="unknown_client_key",source="auth"}`)
		c, _ := metricValue(scrape, `clonekv_committed_updates_total{kind="set"}`)
		if a > 0 && b > 0 && c == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusals or the update missing from /metrics:\n%s", scrape)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v, ok := metricValue(scrape, "clonekv_updates_accepted_total"); !ok || v != 1 {
		t.Errorf("clonekv_updates_accepted_total = %v (%v), want 1: a refused client's update got in", v, ok)
	}
	logs := stderr.String()
	for _, w := range []string{"reason=unknown_client_key", stranger.Public, "reason=handshake_failed", "server_public_key=", srvKeys.Public} {
		if !strings.Contains(logs, w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after SIGTERM")
	}
	if _, _, err := get(base + "/healthz"); err == nil {
		t.Error("http listener still up after exit")
	}
}

// TestVersion: --version names the version, the commit (from build info,
// when built in a git checkout) and the Go toolchain.
func TestVersion(t *testing.T) {
	bin := buildServer(t)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(out))
	if !regexp.MustCompile(`^clonesrv \S+ commit \S+.* go1\.\d+`).MatchString(line) {
		t.Errorf("--version: %q", line)
	}
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		if h := strings.TrimSpace(string(head)); !strings.Contains(line, " commit "+h) {
			t.Errorf("--version: %q, want commit %s", line, h)
		}
	} else {
		t.Logf("no git checkout: commit not checked (%v)", err)
	}
}
