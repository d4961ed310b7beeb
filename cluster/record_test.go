package cluster

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// newZctx is a client-side ZeroMQ context, terminated when the test ends
// (after every socket in it is closed: each goroutine closes its own).
func newZctx(t testing.TB) *zmq.Context {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { zctx.Term(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("zmq context term still waiting after 30s: a socket was left open")
		}
	})
	return zctx
}

// pub is one KVPUB as a recorder received it.
type pub struct {
	Key, Body, UUID string
	Seq             int64
	At              time.Time
}

// recorder is a raw SUB on one node's publisher, recording every KVPUB (key,
// sequence, uuid, body) from its own goroutine, which owns the socket. One
// recorder follows one process of a node: a restarted node gets a new one,
// so a recorder's sequences must follow each other without a gap.
type recorder struct {
	node string
	mu   sync.Mutex
	pubs []pub
	hugz int
	last string // the last HUGZ's properties
	bad  error  // a message that did not decode
	stop chan time.Duration
	done chan error
}

// startRecorder subscribes to everything n publishes and returns once the
// subscription is live (a HUGZ has arrived), or fails the test.
func startRecorder(t testing.TB, zctx *zmq.Context, n *node) *recorder {
	t.Helper()
	r := &recorder{node: n.name, stop: make(chan time.Duration, 1), done: make(chan error, 1)}
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", n.port+1)
	go r.run(zctx, ep)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.mu.Lock()
		h := r.hugz
		r.mu.Unlock()
		if h > 0 {
			return r
		}
		select {
		case err := <-r.done:
			t.Fatalf("recorder on %s: %v", n.name, err)
		default:
		}
		if time.Now().After(deadline) {
			r.finish(0)
			t.Fatalf("recorder on %s: no HUGZ within 20s", n.name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *recorder) run(zctx *zmq.Context, ep string) {
	// Unlimited receive queue: the test must not lose what a node published.
	sub, err := transport.NewSocket(zctx, zmq.SUB, transport.Options{Subscribe: []string{""}})
	if err != nil {
		r.done <- err
		return
	}
	if err := sub.SetRcvhwm(0); err != nil {
		sub.Close()
		r.done <- err
		return
	}
	if err := sub.Connect(ep); err != nil {
		sub.Close()
		r.done <- err
		return
	}
	var idle time.Duration
	stopping := false
	quiet, hard := time.Now(), time.Time{}
	for {
		if !stopping {
			select {
			case idle = <-r.stop:
				// A bound on the drain, should a node never fall quiet.
				stopping, quiet, hard = true, time.Now(), time.Now().Add(idle+30*time.Second)
			default:
			}
		}
		if stopping && (time.Since(quiet) >= idle || time.Now().After(hard)) {
			r.done <- sub.Close()
			return
		}
		frames, err := testkit.RecvWithin(sub, 20*time.Millisecond)
		if err != nil {
			continue
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		r.mu.Lock()
		switch {
		case err != nil:
			r.bad = err
		case string(m.Key) == kvmsg.KeyHeartbeat: // not an update: the drain goes on without it
			r.hugz++
			r.last = string(m.Props)
		default:
			quiet = time.Now()
			r.pubs = append(r.pubs, pub{Key: string(m.Key), Body: string(m.Body), UUID: string(m.UUID), Seq: m.Seq, At: time.Now()})
		}
		r.mu.Unlock()
	}
}

// finish stops the recorder once no update (HUGZ aside) has arrived for
// idle (what the node sent is then all read) and closes its socket.
func (r *recorder) finish(idle time.Duration) {
	select {
	case r.stop <- idle:
	default:
	}
	<-r.done
	r.done <- nil // later finish calls return at once
}

// count is how many KVPUBs have arrived so far.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pubs)
}

// recorded returns a copy of what arrived so far.
func (r *recorder) recorded() []pub {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pub(nil), r.pubs...)
}

// malformed is the last decode error (nil: every message decoded).
func (r *recorder) malformed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

// lastHugz returns the number of HUGZ received and the last one's
// properties.
func (r *recorder) lastHugz() (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hugz, r.last
}

// writerUUID is the UUID of writer w's update i: both in big-endian, so
// the checker can tell which update a KVPUB carries.
func writerUUID(w, i int) []byte {
	u := make([]byte, kvmsg.UUIDLen)
	binary.BigEndian.PutUint64(u, uint64(w)+1)
	binary.BigEndian.PutUint64(u[8:], uint64(i))
	return u
}

// parseUUID inverts writerUUID.
func parseUUID(u string) (w, i int, ok bool) {
	if len(u) != kvmsg.UUIDLen {
		return 0, 0, false
	}
	b := []byte(u)
	return int(binary.BigEndian.Uint64(b)) - 1, int(binary.BigEndian.Uint64(b[8:])), true
}

// writeKey and writeBody are writer w's update i: keys repeat (every
// keys updates), so later updates overwrite earlier ones.
func writeKey(w, i, keys int) string { return fmt.Sprintf("/w/%d/%04d", w, i%keys) }
func writeBody(w, i int) string      { return fmt.Sprintf("w%d-%d", w, i) }

// writers are goroutines that each stream KVSETs with unique UUIDs, each
// through a node picked at random (the next one when that one's queue is
// full), paced, until halted or max updates each.
type writers struct {
	first  int // the first writer's number (UUIDs and keys carry it)
	n      int
	keys   int
	sent   []atomic.Int64 // per writer: updates handed to ZeroMQ
	unsent atomic.Int64   // sends no node's queue took
	stop   chan struct{}
	wg     sync.WaitGroup
	errs   chan error
}

// startWriters starts n writers at rate updates/s each (at most max each)
// over keys keys each, sending to nodes (by their collector, a PUSH each).
func startWriters(zctx *zmq.Context, nodes []*node, n, rate, max, keys int) *writers {
	return startWritersFrom(zctx, 0, nodes, n, rate, max, keys)
}

// startWritersFrom is startWriters numbering the writers from first, so
// that two sets of writers in one test send different updates.
func startWritersFrom(zctx *zmq.Context, first int, nodes []*node, n, rate, max, keys int) *writers {
	ws := &writers{first: first, n: n, keys: keys, sent: make([]atomic.Int64, n), stop: make(chan struct{}), errs: make(chan error, n)}
	for k := range n {
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			if err := ws.run(zctx, nodes, k, rate, max); err != nil {
				ws.errs <- fmt.Errorf("writer %d: %w", first+k, err)
			}
		}()
	}
	return ws
}

func (ws *writers) run(zctx *zmq.Context, nodes []*node, k, rate, max int) error {
	w := ws.first + k
	var socks []*zmq.Socket
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	for _, n := range nodes {
		s, err := transport.Connect(zctx, zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", n.port+2), transport.Options{SndHWM: 1000})
		if err != nil {
			return err
		}
		socks = append(socks, s)
	}
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	start := time.Now()
	for i := 0; i < max; {
		select {
		case <-ws.stop:
			return nil
		default:
		}
		if due := int(time.Since(start).Seconds() * float64(rate)); i >= due {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		m := kvmsg.Msg{Key: []byte(writeKey(w, i, ws.keys)), UUID: writerUUID(w, i), Body: []byte(writeBody(w, i))}
		frames := m.Frames()
		first := rng.IntN(len(socks))
		took := false
		for k := range socks {
			err := transport.SendMessage(socks[(first+k)%len(socks)], frames, zmq.DONTWAIT)
			if err == nil {
				took = true
				break
			}
			if !transport.IsAgain(err) {
				return err
			}
		}
		if !took {
			ws.unsent.Add(1)
			time.Sleep(5 * time.Millisecond)
			continue // the same update again, later
		}
		ws.sent[k].Add(1)
		i++
	}
	<-ws.stop
	return nil
}

// halt stops the writers and returns how many updates they sent in all.
func (ws *writers) halt(t testing.TB) int64 {
	t.Helper()
	select {
	case <-ws.stop:
	default:
		close(ws.stop)
	}
	ws.wg.Wait()
	select {
	case err := <-ws.errs:
		t.Fatal(err)
	default:
	}
	return ws.total()
}

func (ws *writers) total() int64 {
	var s int64
	for i := range ws.sent {
		s += ws.sent[i].Load()
	}
	return s
}
