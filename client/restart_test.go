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
	return startProcDir(t, bin, port, t.TempDir())
}

// startProcDir is startProc on the data directory dir (the same history
// when dir is reused); extra flags follow the defaults and override them.
func startProcDir(t testing.TB, bin string, port int, dir string, extra ...string) *serverProc {
	t.Helper()
	p := &serverProc{stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--hugz", "100ms", "--log-level", "warn", "--data-dir", dir}, extra...)
	p.cmd = exec.Command(bin, args...)
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
	setEach(t, push, 30, "/old/%02d", "before")
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
	setEach(t, push2, 5, "/new/%d", "after")
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

// TestRestartSameHistory (issue 12): a real clonesrv is killed with
// SIGKILL and started again on the same data directory. The client re-joins
// the same history (same id, the same sequence): its watcher is told of no
// reset, no delete and no update for the keys that did not change (it
// resumes: one resumed event), only of
// what really changed after the restart.
func TestRestartSameHistory(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t, "github.com/clonekv/clonekv/cmd/clonesrv")
	port, dir := testkit.FreePorts(t), t.TempDir()
	first := startProcDir(t, bin, port, dir)

	c := dial(t, Options{Endpoints: []string{fmt.Sprintf("tcp://127.0.0.1:%d", port)}, HeartbeatTimeout: 500 * time.Millisecond})
	events := c.Watch(t.Context())
	push := newRawPeer(t).pusher(port)
	setEach(t, push, 30, "/kept/%02d", "before")
	waitSeq(t, port, 30)
	assertMatches(t, c, port, "")
	before := c.Seq()

	first.kill(t)
	startProcDir(t, bin, port, dir)
	nextEvent(t, events, EventResyncStarted, 10*time.Second)
	var during []Event
	for {
		select {
		case ev := <-events:
			if ev.Type != EventResyncDone {
				during = append(during, ev)
				continue
			}
			if ev.Seq != before || ev.Keys != 30 {
				t.Fatalf("re-joined at seq %d with %d keys, want the same history at %d with 30", ev.Seq, ev.Keys, before)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no resync-done within 15s of the restart")
		}
		break
	}
	// It resumed (nothing missed: no per-key event).
	if len(during) != 1 || during[0].Type != EventResumed || during[0].Since != before {
		t.Fatalf("a restart of the same history produced events %+v, want only resumed after %d", during, before)
	}

	push2 := newRawPeer(t).pusher(port)
	set(t, push2, "/kept/00", "after")
	ev := nextEvent(t, events, EventUpdate, 10*time.Second)
	if ev.Key != "/kept/00" || string(ev.Value) != "after" || ev.Seq != before+1 {
		t.Fatalf("after the restart: %+v, want /kept/00=after at seq %d", ev, before+1)
	}
	assertMatches(t, c, port, "")
}

// waitSeq waits until the server at port has sequenced seq updates.
func waitSeq(t testing.TB, port int, seq int64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("server at seq %d", seq), func() bool {
		_, s := snapshotOf(t, port, "\x00none")
		return s >= seq
	})
}

// TestZMTPHeartbeatFindsStoppedServer (issue 11, item 8, the client's
// side): a clonesrv process that sends no HUGZ (--hugz 0, as the Guide's
// Model Five servers) is stopped with SIGSTOP. Its kernel still answers
// TCP, keepalive included, so only ZMTP heartbeats can tell: the client
// with ZMTPHeartbeat re-joins once their timeout has passed, one without
// has noticed nothing by then. After SIGCONT both follow the server again.
func TestZMTPHeartbeatFindsStoppedServer(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t, "github.com/clonekv/clonekv/cmd/clonesrv")
	port := testkit.FreePorts(t)
	srv := startProcDir(t, bin, port, t.TempDir(), "--hugz", "0")
	ep := []string{fmt.Sprintf("tcp://127.0.0.1:%d", port)}
	const ivl, timeout = 100 * time.Millisecond, 500 * time.Millisecond
	hb := dial(t, Options{Endpoints: ep, ZMTPHeartbeat: ivl, ZMTPHeartbeatTimeout: timeout})
	plain := dial(t, Options{Endpoints: ep})
	events := hb.Watch(t.Context())
	push := newRawPeer(t).pusher(port)
	setEach(t, push, 10, "/hb/%d", "before")
	waitSeq(t, port, 10)
	assertMatches(t, hb, port, "")
	assertMatches(t, plain, port, "")

	// Nothing so far may have looked like a dead server: the event below
	// must be the stop's.
	if st := hb.Stats(); st.Disconnects+st.Timeouts != 0 || !st.Synced {
		t.Fatalf("the heartbeat client re-joined before the stop: %+v", st)
	}
	for len(events) > 0 {
		<-events
	}
	stopped := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	defer func() {
		if !continued {
			_ = srv.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	started := nextEvent(t, events, EventResyncStarted, 10*time.Second)
	noticed := time.Since(stopped)
	st := plain.Stats()
	t.Logf("stopped server noticed %v after SIGSTOP (%q), heartbeat %v, timeout %v; the plain client then: synced %v, %d disconnects, %d timeouts",
		noticed.Round(time.Millisecond), started.Reason, ivl, timeout, st.Synced, st.Disconnects, st.Timeouts)
	if st.Disconnects+st.Timeouts != 0 || !st.Synced {
		t.Errorf("the client without ZMTP heartbeats noticed the stopped server too (%+v): the test shows nothing about them", st)
	}

	if err := srv.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued = true
	nextEvent(t, events, EventResyncDone, 20*time.Second)
	setEach(t, push, 5, "/hb/%d", "after")
	waitSeq(t, port, 15)
	assertMatches(t, hb, port, "")
	assertMatches(t, plain, port, "")
	if st := hb.Stats(); st.Disconnects == 0 {
		t.Errorf("the heartbeat client's re-join was not counted as a dropped connection: %+v", st)
	}
}
