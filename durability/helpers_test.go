package durability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
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

// bin is clonesrv, built once for the package (without -race: it is the
// real thing; the tests' own code runs under -race).
var bin string

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithBinary(m, &bin, "clonesrv", "github.com/clonekv/clonekv/cmd/clonesrv"))
}

// srv is one clonesrv process.
type srv struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	log     strings.Builder
	ready   chan struct{}
	exited  chan struct{}
	state   *os.ProcessState
	started time.Time
}

// launch runs clonesrv on dir and port without waiting for it.
func launch(t testing.TB, dir string, port int, extra ...string) *srv {
	t.Helper()
	args := append([]string{"--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--data-dir", dir,
		"--hugz", "100ms", "--log-format", "json", "--log-level", "info"}, extra...)
	s := &srv{cmd: exec.Command(bin, args...), ready: make(chan struct{}), exited: make(chan struct{}), started: time.Now()}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start clonesrv: %v", err)
	}
	go func() {
		s.read(stderr)
		s.state, _ = s.cmd.Process.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("clonesrv %v (exit %v) log:\n%s", args, s.state, s.logText())
		}
	})
	return s
}

// start runs clonesrv and waits until it serves.
func start(t testing.TB, dir string, port int, extra ...string) *srv {
	t.Helper()
	s := launch(t, dir, port, extra...)
	select {
	case <-s.ready:
	case <-s.exited:
		t.Fatalf("clonesrv exited before serving: %v\n%s", s.state, s.logText())
	case <-time.After(60 * time.Second):
		t.Fatalf("clonesrv not serving in 60s\n%s", s.logText())
	}
	return s
}

func (s *srv) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	once := sync.Once{}
	for sc.Scan() {
		s.mu.Lock()
		s.log.Write(sc.Bytes())
		s.log.WriteByte('\n')
		s.mu.Unlock()
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "clonekv server listening" {
			once.Do(func() { close(s.ready) })
		}
	}
}

func (s *srv) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// stop sends sig and waits for the exit.
func (s *srv) stop(t testing.TB, sig syscall.Signal) *os.ProcessState {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	return s.wait(t)
}

func (s *srv) wait(t testing.TB) *os.ProcessState {
	t.Helper()
	select {
	case <-s.exited:
		return s.state
	case <-time.After(60 * time.Second):
		t.Fatalf("clonesrv did not exit in 60s\n%s", s.logText())
		return nil
	}
}

// term stops the server gracefully and checks it exits 0.
func (s *srv) term(t testing.TB) {
	t.Helper()
	if st := s.stop(t, syscall.SIGTERM); !st.Success() {
		t.Fatalf("clonesrv exited with %v after SIGTERM\n%s", st, s.logText())
	}
}

// sockets makes raw client sockets; each socket is used by one goroutine.
type sockets struct {
	t    testing.TB
	zctx *zmq.Context
	port int
	mu   sync.Mutex
	all  []*zmq.Socket
}

func newSockets(t testing.TB, port int) *sockets {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	s := &sockets{t: t, zctx: zctx, port: port}
	t.Cleanup(s.close)
	return s
}

func (s *sockets) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sk := range s.all {
		sk.Close()
	}
	s.all = nil
	s.zctx.Term()
}

func (s *sockets) connect(typ zmq.Type, offset int) *zmq.Socket {
	sk, err := s.zctx.NewSocket(typ)
	if err != nil {
		s.t.Fatal(err)
	}
	sk.SetLinger(transport.MinLinger)
	sk.SetReconnectIvl(20 * time.Millisecond)
	if typ == zmq.SUB {
		sk.SetRcvhwm(1 << 20)
		sk.SetSubscribe("")
	}
	if typ == zmq.PUSH {
		sk.SetLinger(5 * time.Second)
	}
	if err := sk.Connect(fmt.Sprintf("tcp://127.0.0.1:%d", s.port+offset)); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.all = append(s.all, sk)
	s.mu.Unlock()
	return sk
}

// closeSocket closes sk now (before the context).
func (s *sockets) closeSocket(sk *zmq.Socket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.all {
		if x == sk {
			s.all = append(s.all[:i], s.all[i+1:]...)
			sk.Close()
			return
		}
	}
}

// set sends one KVSET (optionally with a ttl in seconds).
func set(t testing.TB, push *zmq.Socket, key, body string, ttl int) {
	m := kvmsg.Msg{Key: []byte(key), Body: []byte(body)}
	if ttl > 0 {
		m = m.SetProp(kvmsg.PropTTL, fmt.Sprint(ttl))
	}
	if _, err := push.SendMessage(m.Frames()); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// stored is one key as a snapshot delivered it.
type stored struct {
	Body, Props string
	Seq         int64
}

// snapshotOf asks for the whole map (or subtree) on a fresh DEALER and
// returns it with the KTHXBAI's sequence and properties.
func snapshotOf(t testing.TB, s *sockets, subtree string) (map[string]stored, int64, string) {
	t.Helper()
	d := s.connect(zmq.DEALER, 0)
	defer s.closeSocket(d)
	if _, err := d.SendMessage(kvmsg.CmdSnapshot, subtree); err != nil {
		t.Fatal(err)
	}
	out := map[string]stored{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		frames, err := testkit.RecvWithin(d, time.Until(deadline))
		if err != nil {
			t.Fatalf("snapshot of %q after %d keys: %v", subtree, len(out), err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatalf("snapshot message: %v", err)
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			return out, m.Seq, string(m.Props)
		}
		out[string(m.Key)] = stored{Body: string(m.Body), Props: string(m.Props), Seq: m.Seq}
	}
}

// pub is one message a subscriber received.
type pub struct {
	Key, Body, Props string
	Seq              int64
	At               time.Time
}

// recorder records everything a SUB receives, from its own goroutine.
type recorder struct {
	mu    sync.Mutex
	pubs  []pub
	hugz  []pub
	stop  chan struct{}
	done  chan struct{}
	error error
}

func record(s *sockets, prefix ...string) *recorder {
	sub := s.connect(zmq.SUB, 1)
	if len(prefix) > 0 {
		sub.SetUnsubscribe("")
		for _, p := range prefix {
			sub.SetSubscribe(p)
		}
		sub.SetSubscribe(kvmsg.KeyHeartbeat)
	}
	r := &recorder{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			frames, err := testkit.RecvWithin(sub, 50*time.Millisecond)
			if err != nil {
				continue
			}
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			if err != nil {
				r.mu.Lock()
				r.error = err
				r.mu.Unlock()
				continue
			}
			p := pub{Key: string(m.Key), Body: string(m.Body), Props: string(m.Props), Seq: m.Seq, At: time.Now()}
			r.mu.Lock()
			if p.Key == kvmsg.KeyHeartbeat {
				r.hugz = append(r.hugz, p)
			} else {
				r.pubs = append(r.pubs, p)
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// finish stops the recorder's goroutine (the socket stays with sockets).
func (r *recorder) finish() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

func (r *recorder) snapshot() (pubs, hugz []pub) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pub(nil), r.pubs...), append([]pub(nil), r.hugz...)
}

// waitFor polls cond until it holds or fails the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, 10*time.Millisecond, what, cond)
}

// prop returns property name from raw properties.
func prop(raw, name string) string {
	v, _ := kvmsg.LookupProp([]byte(raw), name)
	return string(v)
}
