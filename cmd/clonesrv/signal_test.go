package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// built is the clonesrv binary the exec tests share, built once.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// TestMain removes the shared binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildServer builds clonesrv (once per test run) with version-control
// stamping, so --version can report the commit.
func buildServer(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "clonesrv-test"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "clonesrv")
		built.err = testkit.GoBuild(built.bin, ".", "-buildvcs=auto")
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// TestSignalsStopGracefully: SIGINT and SIGTERM make clonesrv publish what
// it accepted, close its sockets and exit 0 within 2 s.
func TestSignalsStopGracefully(t *testing.T) {
	bin := buildServer(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			port := testkit.FreePorts(t)
			var stderr bytes.Buffer
			cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--log-format", "json", "--data-dir", t.TempDir())
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()

			// One update through, so the server is known to be serving.
			zctx, _ := zmq.NewContext()
			defer zctx.Term()
			push, err := transport.Connect(zctx, zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", port+2), transport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer push.Close()
			dealer, err := transport.Connect(zctx, zmq.DEALER, fmt.Sprintf("tcp://127.0.0.1:%d", port), transport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer dealer.Close()
			if err := transport.SendMessage(push, kvmsg.Msg{Key: []byte("/sig"), Body: []byte("1")}.Frames(), 0); err != nil {
				t.Fatal(err)
			}
			if err := dealer.SetRcvtimeo(200 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for seq := int64(0); seq < 1; {
				if time.Now().After(deadline) {
					t.Fatalf("server never stored the update; stderr:\n%s", stderr.String())
				}
				transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/sig")}, 0)
				for {
					f, _, err := transport.RecvMessage(dealer, 0, nil)
					if err != nil {
						break
					}
					if string(f[0]) == kvmsg.KeySnapshotEnd {
						m, _ := kvmsg.Decode(f, kvmsg.Limits{})
						seq = m.Seq
						break
					}
				}
			}

			start := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after %v: %v; stderr:\n%s", sig, err, stderr.String())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("still running 5 s after %v", sig)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v to exit after %v, want < 2s", d, sig)
			}
			if !strings.Contains(stderr.String(), `"msg":"clonekv server stopped"`) || !strings.Contains(stderr.String(), `"published":1`) {
				t.Errorf("no clean stop logged:\n%s", stderr.String())
			}
		})
	}
}

// TestSecondSignalExitsAtOnce (issue 9, behaviour 2): while clonesrv is
// draining after a first SIGTERM (held up here by a subscriber that reads
// nothing and a long publisher linger), a second SIGTERM makes it exit
// within 1 s, saying so.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	bin := buildServer(t)
	port := testkit.FreePorts(t)
	stderr := &syncBuffer{}
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--log-format", "json",
		"--pub-linger", "60s", "--shutdown-timeout", "60s", "--hugz", "0", "--data-dir", t.TempDir())
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	zctx, _ := zmq.NewContext()
	defer zctx.Term()
	ep := func(off int) string { return fmt.Sprintf("tcp://127.0.0.1:%d", port+off) }
	// A subscriber that never reads: what the server publishes piles up in
	// its PUB queue, which the linger then tries to flush.
	sub, err := transport.Connect(zctx, zmq.SUB, ep(1), transport.Options{Subscribe: []string{""}, RcvHWM: 1, Linger: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	push, err := transport.Connect(zctx, zmq.PUSH, ep(2), transport.Options{Linger: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer push.Close()
	body := make([]byte, 16<<10)
	const n = 3000 // 48 MB: far more than loopback's socket buffers hold
	for i := range n {
		if err := transport.SendMessage(push, kvmsg.Msg{Key: fmt.Appendf(nil, "/big/%d", i%100), Body: body}.Frames(), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the server has taken them in (its stop log would say how
	// many it published; here the snapshot's sequence tells).
	dealer, err := transport.Connect(zctx, zmq.DEALER, ep(0), transport.Options{Linger: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer dealer.Close()
	deadline := time.Now().Add(60 * time.Second)
	for seq := int64(0); seq < n; {
		if time.Now().After(deadline) {
			t.Fatalf("server stored %d of %d updates; stderr:\n%s", seq, n, stderr.String())
		}
		transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/none/")}, 0)
		if f, err := testkit.RecvWithin(dealer, time.Second); err == nil && string(f[0]) == kvmsg.KeySnapshotEnd {
			m, _ := kvmsg.Decode(f, kvmsg.Limits{})
			seq = m.Seq
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, 5*time.Millisecond, "the first signal logged", func() bool {
		return strings.Contains(stderr.String(), "a second signal exits at once")
	})
	select {
	case err := <-exited:
		t.Fatalf("clonesrv exited (%v) before the second signal: the drain was not held up; stderr:\n%s", err, stderr.String())
	default:
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if d := time.Since(start); d > time.Second {
			t.Errorf("exited %v after the second signal, want within 1s", d)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("exit: %v, want status 1", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after the second signal; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "second signal: exiting without draining") {
		t.Errorf("no line about the second signal:\n%s", stderr.String())
	}
}
