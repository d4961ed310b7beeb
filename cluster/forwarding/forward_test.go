// Package forwarding_test checks writes at any node of a three-node
// clonesrv cluster (README "Running a cluster"), with real processes on
// 127.0.0.1: an update sent to a follower is forwarded to the leader and
// appears on all three nodes with the same sequence; a Model Six client
// that PUBlishes every update to two nodes gets each applied once.
package forwarding_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

var bin string

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithBinary(m, &bin, "clonesrv", "github.com/clonekv/clonekv/cmd/clonesrv"))
}

// node is one clonesrv process: CHP on P, P+1, P+2, raft on P+3, HTTP on P+4.
type node struct {
	name string
	port int
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
}

// status is the node's GET /v1/cluster (role and leader; zero when it
// cannot be read).
func (n *node) status() (role, leader string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/cluster", n.port+4))
	if err != nil {
		return "", ""
	}
	defer resp.Body.Close()
	var st struct{ Role, Leader string }
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return "", ""
	}
	return st.Role, st.Leader
}

func (n *node) ep(offset int) string { return fmt.Sprintf("tcp://127.0.0.1:%d", n.port+offset) }

// metric returns the sum of the samples of a metric on the node's
// /metrics (-1 when it cannot be read).
func (n *node) metric(name string) float64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", n.port+4))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			total += v
		}
	}
	return total
}

// startCluster runs three nodes with extra flags and waits until each
// serves its metrics.
func startCluster(t *testing.T, extra ...string) []*node {
	t.Helper()
	var nodes []*node
	var spec []string
	for i, p := range testkit.PortRuns(t, 3, 5) {
		n := &node{name: fmt.Sprintf("n%d", i+1), port: p}
		nodes = append(nodes, n)
		spec = append(spec, fmt.Sprintf("%s=127.0.0.1:%d/%d", n.name, p+3, p))
	}
	for _, n := range nodes {
		args := append([]string{"--node", n.name, "--cluster", strings.Join(spec, ","), "--bind", "127.0.0.1",
			"--data-dir", t.TempDir(), "--hugz", "100ms", "--http", fmt.Sprintf("127.0.0.1:%d", n.port+4), "--log-level", "warn"}, extra...)
		cmd := exec.Command(bin, args...)
		n.cmd = cmd
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				n.mu.Lock()
				n.log.WriteString(sc.Text() + "\n")
				n.mu.Unlock()
			}
			cmd.Wait()
			close(exited)
		}()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
			if t.Failed() {
				n.mu.Lock()
				t.Logf("%s log:\n%s", n.name, n.log.String())
				n.mu.Unlock()
			}
		})
	}
	for _, n := range nodes {
		testkit.WaitFor(t, 60*time.Second, 20*time.Millisecond, n.name+" serving", func() bool { return n.metric("clonekv_sequence") >= 0 })
	}
	return nodes
}

// subscriber records the KVPUBs of one node (key → sequences received),
// on a goroutine that alone uses its socket.
type subscriber struct {
	mu    sync.Mutex
	seqs  map[string][]int64
	hugz  int
	stop  chan struct{}
	done  chan struct{}
	fails []string
}

func subscribe(t *testing.T, zctx *zmq.Context, n *node) *subscriber {
	t.Helper()
	sock, err := transport.Connect(zctx, zmq.SUB, n.ep(1), transport.Options{Subscribe: []string{""}})
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{seqs: map[string][]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer sock.Close()
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			frames, err := testkit.RecvWithin(sock, 50*time.Millisecond)
			if err != nil {
				continue
			}
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			s.mu.Lock()
			switch {
			case err != nil:
				s.fails = append(s.fails, err.Error())
			case string(m.Key) == kvmsg.KeyHeartbeat:
				s.hugz++
			default:
				s.seqs[string(m.Key)] = append(s.seqs[string(m.Key)], m.Seq)
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(s.stop); <-s.done })
	return s
}

func (s *subscriber) get(key string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.seqs[key]...)
}

func (s *subscriber) heard() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hugz > 0
}

func kvset(key string, id []byte, body string) [][]byte {
	return kvmsg.Msg{Key: []byte(key), UUID: id, Props: []byte("owner=test\n"), Body: []byte(body)}.Frames()
}

// TestWriteAtAnyNode: an update PUSHed to each node's collector (so at
// least two reach a follower) is published by all three nodes once, with
// the same sequence; followers count what they forwarded.
func TestWriteAtAnyNode(t *testing.T) {
	nodes := startCluster(t)
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zctx.Term() }) // after the subscribers' cleanups, which close their sockets
	var subs []*subscriber
	for _, n := range nodes {
		subs = append(subs, subscribe(t, zctx, n))
	}
	for i, s := range subs {
		testkit.WaitFor(t, 60*time.Second, 10*time.Millisecond, nodes[i].name+"'s HUGZ", s.heard)
	}
	pushes := make([]*zmq.Socket, len(nodes))
	for i, n := range nodes {
		if pushes[i], err = transport.Connect(zctx, zmq.PUSH, n.ep(2), transport.Options{Linger: time.Second}); err != nil {
			t.Fatal(err)
		}
		defer pushes[i].Close()
	}
	const perNode = 20
	for k := 0; k < perNode; k++ {
		for i, n := range nodes {
			id := bytes.Repeat([]byte{byte(i + 1), byte(k)}, kvmsg.UUIDLen/2)
			if err := transport.SendMessage(pushes[i], kvset(fmt.Sprintf("/at/%s/%d", n.name, k), id, "v"), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range nodes {
		for k := 0; k < perNode; k++ {
			key := fmt.Sprintf("/at/%s/%d", n.name, k)
			testkit.WaitFor(t, 60*time.Second, 5*time.Millisecond, key+" on every node", func() bool {
				for _, s := range subs {
					if len(s.get(key)) == 0 {
						return false
					}
				}
				return true
			})
			want := subs[0].get(key)
			for i, s := range subs {
				if got := s.get(key); len(got) != 1 || got[0] != want[0] {
					t.Errorf("%s published by %s with sequences %v, by %s with %v", key, nodes[i].name, got, nodes[0].name, want)
				}
			}
		}
	}
	forwarded := 0.0
	for _, n := range nodes {
		forwarded += n.metric("clonekv_updates_forwarded_total")
	}
	if forwarded < 2*perNode {
		t.Errorf("%v updates forwarded in all, want at least %d (the followers' writes)", forwarded, 2*perNode)
	}
}

// TestModelSixClientAgainstCluster: the Guide's Model Six client PUBlishes
// every update to the collectors of two servers (all nodes run
// --collector sub). Each update reaches the leader twice (directly and
// forwarded, or forwarded twice when the leader is the third node); it is
// applied, and published by every node, exactly once; an update without a
// UUID is never deduplicated.
func TestModelSixClientAgainstCluster(t *testing.T) {
	nodes := startCluster(t, "--collector", "sub")
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zctx.Term() }) // after the subscribers' cleanups, which close their sockets
	var subs []*subscriber
	for _, n := range nodes {
		subs = append(subs, subscribe(t, zctx, n))
	}
	for i, s := range subs {
		testkit.WaitFor(t, 60*time.Second, 10*time.Millisecond, nodes[i].name+"'s HUGZ", s.heard)
	}
	// The client: one PUB connected to the collectors of n1 and n2, as
	// clone.c connects its publisher to every server it is given.
	pub, err := transport.Connect(zctx, zmq.PUB, nodes[0].ep(2), transport.Options{Linger: time.Second, SndHWM: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Connect(nodes[1].ep(2)); err != nil {
		t.Fatal(err)
	}
	// A PUB drops what it sends before a subscriber's subscription arrives:
	// send probes (no UUID) until both servers accepted one.
	testkit.WaitFor(t, 60*time.Second, 20*time.Millisecond, "both collectors subscribed", func() bool {
		if err := transport.SendMessage(pub, kvset("/probe", nil, "p"), 0); err != nil {
			t.Fatal(err)
		}
		return nodes[0].metric("clonekv_updates_accepted_total") > 0 && nodes[1].metric("clonekv_updates_accepted_total") > 0
	})
	dedupBefore := 0.0
	for _, n := range nodes {
		dedupBefore += n.metric("clonekv_updates_deduplicated_total")
	}
	const updates = 200
	for k := 0; k < updates; k++ {
		id := bytes.Repeat([]byte{0xa6, byte(k >> 8), byte(k)}, 6)[:kvmsg.UUIDLen]
		if err := transport.SendMessage(pub, kvset(fmt.Sprintf("/six/%d", k), id, fmt.Sprint(k)), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Two updates without a UUID: both copies of each are applied.
	for k := 0; k < 2; k++ {
		if err := transport.SendMessage(pub, kvset(fmt.Sprintf("/nouuid/%d", k), nil, "x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Every copy accounted for: each UUID update deduplicated once.
	testkit.WaitFor(t, 60*time.Second, 20*time.Millisecond, "every second copy deduplicated", func() bool {
		total := 0.0
		for _, n := range nodes {
			total += n.metric("clonekv_updates_deduplicated_total")
		}
		return total-dedupBefore >= updates
	})
	for k := 0; k < updates; k++ {
		key := fmt.Sprintf("/six/%d", k)
		testkit.WaitFor(t, 60*time.Second, 5*time.Millisecond, key+" on every node", func() bool {
			for _, s := range subs {
				if len(s.get(key)) == 0 {
					return false
				}
			}
			return true
		})
	}
	for k := 0; k < 2; k++ {
		key := fmt.Sprintf("/nouuid/%d", k)
		testkit.WaitFor(t, 60*time.Second, 5*time.Millisecond, key+" twice on every node", func() bool {
			for _, s := range subs {
				if len(s.get(key)) < 2 {
					return false
				}
			}
			return true
		})
	}
	// A last update, published once every node has it: by then nothing
	// sent before it can still be on its way to being applied twice.
	if err := transport.SendMessage(pub, kvset("/six/end", []byte("end-marker-uuid!"), "end"), 0); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 60*time.Second, 5*time.Millisecond, "the end marker on every node", func() bool {
		for _, s := range subs {
			if len(s.get("/six/end")) == 0 {
				return false
			}
		}
		return true
	})
	for k := 0; k < updates; k++ {
		key := fmt.Sprintf("/six/%d", k)
		want := subs[0].get(key)
		for i, s := range subs {
			if got := s.get(key); len(got) != 1 || got[0] != want[0] {
				t.Errorf("%s published by %s with sequences %v, want exactly once, as %s: %v", key, nodes[i].name, got, nodes[0].name, want)
			}
		}
	}
}

// TestFollowerWritesThroughElection: kill -9 the leader; updates PUSHed to
// a follower once it has noticed (no leader known, or already the new
// one) wait in its forward queue and reach the new leader: each is
// published once by both survivors, with the same sequence.
func TestFollowerWritesThroughElection(t *testing.T) {
	nodes := startCluster(t)
	var leader *node
	testkit.WaitFor(t, 60*time.Second, 20*time.Millisecond, "one leader all agree on", func() bool {
		leader = nil
		names := map[string]int{}
		for _, n := range nodes {
			role, l := n.status()
			names[l]++
			if role == "leader" {
				leader = n
			}
		}
		return leader != nil && names[leader.name] == len(nodes)
	})
	var rest []*node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zctx.Term() })
	var subs []*subscriber
	for _, n := range rest {
		subs = append(subs, subscribe(t, zctx, n))
	}
	for i, s := range subs {
		testkit.WaitFor(t, 60*time.Second, 10*time.Millisecond, rest[i].name+"'s HUGZ", s.heard)
	}
	f := rest[0]
	push, err := transport.Connect(zctx, zmq.PUSH, f.ep(2), transport.Options{Linger: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer push.Close()

	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 60*time.Second, 5*time.Millisecond, f.name+" noticing the leader's death", func() bool {
		_, l := f.status()
		return l != leader.name
	})
	queuedAtSend := f.metric(`clonekv_forward_queue{unit="updates"}`)
	const n = 30
	for k := 0; k < n; k++ {
		id := bytes.Repeat([]byte{0xe1, byte(k)}, kvmsg.UUIDLen/2)
		if err := transport.SendMessage(push, kvset(fmt.Sprintf("/elect/%d", k), id, "v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	maxQueued := 0.0
	for k := 0; k < n; k++ {
		key := fmt.Sprintf("/elect/%d", k)
		testkit.WaitFor(t, 60*time.Second, 5*time.Millisecond, key+" on both survivors", func() bool {
			if q := f.metric(`clonekv_forward_queue{unit="updates"}`); q > maxQueued {
				maxQueued = q
			}
			for _, s := range subs {
				if len(s.get(key)) == 0 {
					return false
				}
			}
			return true
		})
	}
	// A last update through the follower: once both survivors published
	// it, nothing sent before it is still on its way.
	if err := transport.SendMessage(push, kvset("/elect/end", []byte("election-end-id!"), "end"), 0); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 60*time.Second, 5*time.Millisecond, "the end marker on both survivors", func() bool {
		return len(subs[0].get("/elect/end")) > 0 && len(subs[1].get("/elect/end")) > 0
	})
	for k := 0; k < n; k++ {
		key := fmt.Sprintf("/elect/%d", k)
		a, b := subs[0].get(key), subs[1].get(key)
		if len(a) != 1 || len(b) != 1 || a[0] != b[0] {
			t.Errorf("%s published with sequences %v by %s and %v by %s, want once, equal", key, a, rest[0].name, b, rest[1].name)
		}
	}
	t.Logf("forward queue at %s: %v when the writes began, at most %v seen while they flowed", f.name, queuedAtSend, maxQueued)
}
