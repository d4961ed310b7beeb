package reliability

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// testLogger writes server warnings and errors only with -v.
func testLogger() *slog.Logger { return testkit.Logger(slog.LevelWarn) }

// inproc is an in-process server on 127.0.0.1 and a free port triple.
type inproc struct {
	*server.Server
	run *testkit.Running
}

// startServer runs a server until stop is called (or the test ends).
func startServer(t testing.TB, cfg server.Config) *inproc {
	t.Helper()
	cfg.Bind = "127.0.0.1"
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	return &inproc{Server: srv, run: testkit.Serve(t, srv, 20*time.Second)}
}

// stop shuts the server down and waits for Run to return (idempotent).
func (s *inproc) stop(t testing.TB) { s.run.Stop(t) }

// newContext returns a client ZeroMQ context, terminated when the test ends.
// maxSockets > 0 raises libzmq's default limit of 1023 sockets.
func newContext(t testing.TB, maxSockets int) *zmq.Context {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	if maxSockets > 0 {
		if err := zctx.SetMaxSockets(maxSockets); err != nil {
			t.Fatalf("set max sockets %d: %v", maxSockets, err)
		}
	}
	t.Cleanup(func() {
		// Term waits until every socket of the context is closed: a socket
		// a failed test left open would hang the whole package run. Give up
		// on it after a while (the goroutine leaks, the test says why).
		done := make(chan struct{})
		go func() { zctx.Term(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("zmq context term still waiting after 30s: a socket of this test was left open")
		}
	})
	return zctx
}

func endpoint(port, offset int) string { return fmt.Sprintf("tcp://127.0.0.1:%d", port+offset) }

// connect opens a client socket or fails the test. The caller owns it and
// closes it from the goroutine that uses it.
func connect(t testing.TB, zctx *zmq.Context, typ zmq.Type, port, offset int, opts transport.Options) *zmq.Socket {
	t.Helper()
	s, err := transport.Connect(zctx, typ, endpoint(port, offset), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// setMsg is a KVSET's frames.
func setMsg(key string, body []byte, props ...string) [][]byte {
	m := kvmsg.Msg{Key: []byte(key), Body: body}
	for i := 0; i+1 < len(props); i += 2 {
		m = m.SetProp(props[i], props[i+1])
	}
	return m.Frames()
}

// stampBody is an update body carrying its index and send time, so a
// subscriber can check order and measure latency.
func stampBody(idx int64, pad int) []byte {
	b := make([]byte, 16+pad)
	binary.BigEndian.PutUint64(b, uint64(idx))
	binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
	return b
}

// readStamp returns a stamped body's index and its age.
func readStamp(b []byte) (idx int64, age time.Duration, ok bool) {
	if len(b) < 16 {
		return 0, 0, false
	}
	idx = int64(binary.BigEndian.Uint64(b))
	sent := int64(binary.BigEndian.Uint64(b[8:]))
	return idx, time.Duration(time.Now().UnixNano() - sent), true
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, 10*time.Millisecond, what, cond)
}

// fdCount counts the open file descriptors of a process (pid 0: this one).
func fdCount(t testing.TB, pid int) int {
	t.Helper()
	dir := "/proc/self/fd"
	if pid > 0 {
		dir = fmt.Sprintf("/proc/%d/fd", pid)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// procStatus reads one "Name: value kB" field of /proc/<pid>/status, in
// bytes for kB fields (pid 0: this process).
func procStatus(pid int, field string) (int64, error) {
	path := "/proc/self/status"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		var v int64
		var unit string
		fmt.Sscan(strings.TrimSpace(rest), &v, &unit)
		if unit == "kB" {
			v *= 1024
		}
		return v, nil
	}
	return 0, fmt.Errorf("%s: no field %s", path, field)
}

// rss is a process's resident set size in bytes.
func rss(t testing.TB, pid int) int64 {
	t.Helper()
	v, err := procStatus(pid, "VmRSS")
	if err != nil {
		t.Fatalf("rss: %v", err)
	}
	return v
}

const mib = 1 << 20
