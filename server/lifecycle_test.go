package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// gatedHandler counts what it handles; each OnCommit first waits for gate
// to be closed.
type gatedHandler struct {
	gate    chan struct{}
	handled atomic.Int64
	lastSeq atomic.Int64
}

func (h *gatedHandler) OnCommit(b actors.Batch) {
	<-h.gate
	h.handled.Add(int64(len(b.Updates)))
	h.lastSeq.Store(b.Updates[len(b.Updates)-1].Msg.Seq)
}

// runServer runs srv.Run in a goroutine; the returned channel gets its
// result.
func runServer(t *testing.T, srv *Server) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready in 10s")
	}
	return done
}

func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Bind = "127.0.0.1"
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestShutdownDeadlineWithHandlerBacklog (issue 9, behaviour 2): with a
// handler stuck on a backlog, Shutdown returns the context's error by its
// deadline; Run then returns ErrServerClosed, and Close releases the rest.
func TestShutdownDeadlineWithHandlerBacklog(t *testing.T) {
	h := &gatedHandler{gate: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(h.gate)
		}
	}()
	srv := newServer(t, Config{Heartbeat: -1, Handlers: []Handler{{Name: "stuck", Handler: h}}})
	runDone := runServer(t, srv)
	push := newPeer(t, srv.Port()).push()
	// Several committed batches, one after another: the first one holds
	// the handler, the later ones queue behind it. (Updates sent together
	// may travel as one raft entry, hence one batch.)
	for i := range 200 {
		set(t, push, fmt.Sprintf("/s/%d", i), "v")
		if i%50 == 49 {
			want := int64(i + 1)
			waitFor(t, 10*time.Second, fmt.Sprintf("%d updates published", want), func() bool { return srv.Stats().UpdatesPublished.Load() == want })
		}
	}
	waitFor(t, 10*time.Second, "a backlog", func() bool { return srv.Handlers()[0].Queued > 0 })

	const bound = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	err := srv.Shutdown(ctx)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline's error", err)
	}
	// The deadline, plus scheduling slack on a loaded machine.
	if took > bound+500*time.Millisecond {
		t.Errorf("Shutdown returned %v after it was called, its deadline was %v", took, bound)
	}
	select {
	case err := <-runDone:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Run = %v, want ErrServerClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Shutdown gave up")
	}
	start = time.Now()
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > hurryBound {
		t.Errorf("Close took %v with a handler stuck", d)
	}
	// Once the stuck call returns, the handler gets nothing more: the rest
	// of its backlog is counted as dropped.
	close(h.gate)
	released = true
	waitFor(t, 10*time.Second, "the abandoned backlog counted", func() bool {
		st := srv.Handlers()[0]
		return st.Handled+st.Dropped == 200
	})
	if st := srv.Handlers()[0]; st.Handled >= 200 || st.Dropped == 0 || h.handled.Load() != st.Handled {
		t.Errorf("stuck handler %+v (it handled %d): want its backlog dropped", st, h.handled.Load())
	}
}

// TestShutdownDrainsEverythingAccepted (issue 9, behaviour 2): Shutdown
// called while updates stream and a handler has a backlog, with time
// enough: it returns nil, and every update the server accepted was
// published to the subscriber, in order, and handled by the handler.
func TestShutdownDrainsEverythingAccepted(t *testing.T) {
	h := &gatedHandler{gate: make(chan struct{})}
	srv := newServer(t, Config{Heartbeat: -1, PubHWM: 1 << 20, Handlers: []Handler{{Name: "slow", Handler: h, Queue: 1 << 16}}})
	runDone := runServer(t, srv)
	p := newPeer(t, srv.Port())
	push, sub := p.push(), p.sub("/d/")
	subscribed(t, push, sub, "/d/ping")
	go func() { <-srv.stopping; close(h.gate) }() // the backlog drains only once the stop began

	const n = 5000
	base := srv.Stats().UpdatesAccepted.Load()
	// Once the server stops reading, sends block at the high-water mark:
	// the timeout ends the sender then.
	if err := push.SetSndtimeo(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	sent := make(chan struct{})
	go func() { // owns push from here
		defer close(sent)
		for i := range n {
			m := kvmsg.Msg{Key: fmt.Appendf(nil, "/d/%04d", i), Body: []byte("v")}
			if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
				return // the server went away mid-stream: expected
			}
		}
	}()
	waitFor(t, 20*time.Second, "half the updates accepted", func() bool { return srv.Stats().UpdatesAccepted.Load()-base >= n/2 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-sent
	if err := <-runDone; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Run = %v, want ErrServerClosed", err)
	}
	accepted := srv.Stats().UpdatesAccepted.Load()
	if pub, seq := srv.Stats().UpdatesPublished.Load(), srv.Stats().Sequence.Load(); pub != accepted || seq != accepted {
		t.Errorf("accepted %d, sequenced %d, published %d: want all equal", accepted, seq, pub)
	}
	if got := h.handled.Load(); got != accepted || h.lastSeq.Load() != accepted {
		t.Errorf("handler handled %d updates up to seq %d, want all %d", got, h.lastSeq.Load(), accepted)
	}
	// The subscriber gets every one (the PUB's linger flushed them).
	for want := base + 1; want <= accepted; want++ {
		m := recvMsg(t, sub, 10*time.Second)
		if m.Seq != want {
			t.Fatalf("subscriber got seq %d, want %d (accepted %d)", m.Seq, want, accepted)
		}
	}
	t.Logf("accepted %d of %d updates before the shutdown, all published and handled", accepted-base, n)
}

// TestCloseStopsRunningServer: Close on a running server returns once
// everything is released; Run returns ErrServerClosed; calling Close,
// Shutdown or Run afterwards is harmless.
func TestCloseStopsRunningServer(t *testing.T) {
	h := &gatedHandler{gate: make(chan struct{})}
	defer close(h.gate)
	srv := newServer(t, Config{Heartbeat: 10 * time.Millisecond, Handlers: []Handler{{Name: "stuck", Handler: h}}})
	runDone := runServer(t, srv)
	push := newPeer(t, srv.Port()).push()
	set(t, push, "/c/1", "v")
	waitFor(t, 10*time.Second, "the handler busy", func() bool { return srv.Handlers()[0].Busy > 0 })
	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-runDone; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Run = %v, want ErrServerClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Close: %v", err)
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Error("Run after Close returned nil")
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// leakCheck runs f, which must release everything it started, and fails
// if goroutines or file descriptors are left behind (after waiting a while
// for goroutines that are on their way out).
func leakCheck(t *testing.T, what string, f func()) {
	t.Helper()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	f()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, fd := runtime.NumGoroutine(), openFDs(t)
		if g <= g0 && fd <= fd0 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%s: %d goroutines and %d fds before, %d and %d after\n%s", what, g0, fd0, g, fd, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openCloseHandler records its Open and Close calls; fail makes Open fail.
type openCloseHandler struct {
	fail          bool
	opened, closd atomic.Int32
}

func (h *openCloseHandler) OnCommit(actors.Batch) {}
func (h *openCloseHandler) Open() error {
	h.opened.Add(1)
	if h.fail {
		return errors.New("cannot open the audit file")
	}
	return nil
}
func (h *openCloseHandler) Close() error { h.closd.Add(1); return nil }

// TestNewFailuresReleaseEverything (issue 9, behaviour 3): New failing at
// each wiring step (a port taken, a bad CURVE key, a handler that fails to
// open, a bad handler list) returns an error and leaves no goroutine and no
// file descriptor behind; the handlers opened before the failing one are
// closed. So do a server closed before Run, and one closed while running.
func TestNewFailuresReleaseEverything(t *testing.T) {
	quiet := testLogger(t)
	_, sec, err := zmq.NewCurveKeypair()
	if err != nil {
		t.Fatal(err)
	}
	// Warm up what stays for the process's life (the runtime's poller,
	// libzmq's first context), so it is not counted as a leak.
	warm, err := New(Config{Bind: "127.0.0.1", Logger: quiet, Curve: &CurveConfig{SecretKey: sec}})
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()

	taken := testkit.FreePorts(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", taken+1))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	first := &openCloseHandler{}
	cases := []struct {
		name  string
		cfg   Config
		check func(t *testing.T)
	}{
		{name: "publisher port taken", cfg: Config{Port: taken}},
		{name: "publisher port taken, CURVE on", cfg: Config{Port: taken, Curve: &CurveConfig{SecretKey: sec}}},
		{name: "bad CURVE secret key", cfg: Config{Curve: &CurveConfig{SecretKey: "not-a-key"}}},
		{name: "bad CURVE client key", cfg: Config{Curve: &CurveConfig{SecretKey: sec, AllowedClients: []string{"short"}}}},
		{name: "handler fails to open", cfg: Config{Curve: &CurveConfig{SecretKey: sec}, Handlers: []Handler{
			{Name: "first", Handler: first}, {Name: "audit", Handler: &openCloseHandler{fail: true}},
		}}, check: func(t *testing.T) {
			if first.opened.Load() != 1 || first.closd.Load() != 1 {
				t.Errorf("the handler opened before the failing one: opened %d, closed %d times, want 1 and 1",
					first.opened.Load(), first.closd.Load())
			}
		}},
		{name: "handler without a name", cfg: Config{Handlers: []Handler{{Handler: &openCloseHandler{}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t, tc.name, func() {
				tc.cfg.Bind, tc.cfg.Logger = "127.0.0.1", quiet
				srv, err := New(tc.cfg)
				if err == nil {
					srv.Close()
					t.Fatal("New succeeded")
				}
				t.Logf("New: %v", err)
			})
			if tc.check != nil {
				tc.check(t)
			}
		})
	}

	t.Run("closed before Run", func(t *testing.T) {
		h := &openCloseHandler{}
		leakCheck(t, "closed before Run", func() {
			srv, err := New(Config{Bind: "127.0.0.1", Logger: quiet, Handlers: []Handler{{Name: "h", Handler: h}}})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := srv.Run(context.Background()); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Run after Shutdown = %v, want ErrServerClosed", err)
			}
		})
		if h.closd.Load() != 1 {
			t.Errorf("handler closed %d times, want 1", h.closd.Load())
		}
	})

	t.Run("closed while running", func(t *testing.T) {
		h := &openCloseHandler{}
		leakCheck(t, "closed while running", func() {
			srv, err := New(Config{Bind: "127.0.0.1", Logger: quiet, Curve: &CurveConfig{SecretKey: sec},
				Heartbeat: 10 * time.Millisecond, Handlers: []Handler{{Name: "h", Handler: h}}})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Go(func() {
				if err := srv.Run(context.Background()); !errors.Is(err, ErrServerClosed) {
					t.Errorf("Run = %v, want ErrServerClosed", err)
				}
			})
			<-srv.Ready()
			if err := srv.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			wg.Wait()
		})
		if h.closd.Load() != 1 {
			t.Errorf("handler closed %d times, want 1", h.closd.Load())
		}
	})
}

// TestRunContextBoundsShutdown: when Run's context ends, Run shuts down
// gracefully within Config.ShutdownTimeout: with a stuck handler it returns
// the deadline's error soon after the bound, everything else released.
func TestRunContextBoundsShutdown(t *testing.T) {
	h := &gatedHandler{gate: make(chan struct{})}
	defer close(h.gate)
	const bound = 300 * time.Millisecond
	srv := newServer(t, Config{Heartbeat: -1, ShutdownTimeout: bound, Handlers: []Handler{{Name: "stuck", Handler: h}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.Ready()
	push := newPeer(t, srv.Port()).push()
	set(t, push, "/r/1", "v")
	set(t, push, "/r/2", "v")
	waitFor(t, 10*time.Second, "the handler busy", func() bool { return srv.Handlers()[0].Busy > 0 })
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run = %v, want the shutdown bound's error", err)
		}
		if d := time.Since(start); d < bound || d > bound+hurryBound {
			t.Errorf("Run returned %v after its context ended, bound %v", d, bound)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if srv.Stats().UpdatesPublished.Load() != 2 {
		t.Errorf("published %d of 2 accepted updates", srv.Stats().UpdatesPublished.Load())
	}
}
