package client

import (
	"github.com/clonekv/clonekv/internal/testkit"

	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// serverProc is a clonesrv process.
type serverProc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
}

func startProc(t testing.TB, bin string, port int) *serverProc {
	t.Helper()
	p := &serverProc{stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--hugz", "100ms", "--log-level", "warn", "--data-dir", t.TempDir())
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start clonesrv: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("clonesrv --port %d (exit %v) stderr:\n%s", port, p.cmd.ProcessState, p.stderr)
		}
	})
	return p
}

// kill ends the process with SIGKILL (no graceful anything) and waits.
func (p *serverProc) kill(t testing.TB) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("clonesrv did not exit after SIGKILL")
	}
}

// TestServerProcessRestart: a real clonesrv is killed and started again on
// the same port with an empty map. The client notices (the connection
// drops, or the sequence goes backwards, or the heartbeats stop), re-joins,
// and matches the new server: none of the old keys survive in it.
func TestServerProcessRestart(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t, "github.com/clonekv/clonekv/cmd/clonesrv")
	port := testkit.FreePorts(t)
	first := startProc(t, bin, port)

	c := dial(t, Options{Endpoints: []string{fmt.Sprintf("tcp://127.0.0.1:%d", port)}, HeartbeatTimeout: 500 * time.Millisecond})
	events := c.Watch(t.Context())
	p := newRawPeer(t)
	push := p.pusher(port)
	for i := range 30 {
		set(t, push, fmt.Sprintf("/old/%02d", i), "before")
	}
	waitSeq(t, port, 30)
	assertMatches(t, c, port, "")
	if n := c.Snapshot().Len(); n != 30 {
		t.Fatalf("client holds %d keys before the restart, want 30", n)
	}

	first.kill(t)
	killed := time.Now()
	startProc(t, bin, port)
	started := nextEvent(t, events, EventResyncStarted, 5*time.Second)
	done := nextEvent(t, events, EventResyncDone, 10*time.Second)
	t.Logf("restart noticed (%q) and re-joined %v after the kill; %+v", started.Reason, time.Since(killed).Round(time.Millisecond), done)

	push2 := newRawPeer(t).pusher(port)
	for i := range 5 {
		set(t, push2, fmt.Sprintf("/new/%d", i), "after")
	}
	waitSeq(t, port, 5)
	assertMatches(t, c, port, "")
	if n := c.Snapshot().Len(); n != 5 {
		t.Fatalf("client holds %d keys after the restart, want the new server's 5", n)
	}
	if _, ok := c.Get("/old/00"); ok {
		t.Fatal("a key of the old server survived the restart")
	}
	if st := c.Stats(); st.Disconnects+st.Restarts+st.Timeouts == 0 {
		t.Fatalf("restart not attributed: %+v", st)
	}
}

// waitSeq waits until the server at port has sequenced seq updates.
func waitSeq(t testing.TB, port int, seq int64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("server at seq %d", seq), func() bool {
		_, s := snapshotOf(t, port, "\x00none")
		return s >= seq
	})
}
