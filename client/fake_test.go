package client

import (
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// fakeServer is a scriptable clone server (ROUTER + PUB) for misbehaviour a
// real server does not show on demand: skipped sequences, a restart without
// a disconnect, silence. One goroutine owns its sockets; the test drives it
// through cmds.
type fakeServer struct {
	port int
	cmds chan func(*fakeState)
	done chan struct{}
}

type fakeState struct {
	pub  *zmq.Socket
	kv   map[string]string
	seq  int64
	hugz bool

	hugzEvery    time.Duration // default 50ms
	lastHugz     time.Time     // when the last HUGZ was sent
	history      string        // set: KTHXBAI and HUGZ carry history=<it>
	hugzSeqProp  bool          // HUGZ carry seq=<current sequence> (clonekv)
	hugzSeqFrame bool          // HUGZ carry the sequence in their frame (the Guide's Model Six)
	refuse       int           // answer this many snapshot requests with a refused KTHXBAI
	hold         time.Duration // answer snapshot requests only after this long
	garbage      bool          // answer snapshot requests with undecodable messages
	requests     int           // snapshot requests received
	resume       bool          // advertise resume=1 and answer resume requests (README "Protocol additions")
	log          []kvmsg.Msg   // resume: the updates retained, in sequence order
	retainFrom   int64         // resume: the oldest sequence retained (0: all)
	resumeReqs   []string      // resume requests received: their third frame
	strayResume  int           // resume requests received while resume is off
	replies      []string      // KTHXBAI properties sent, in order
	badSince     bool          // resume: answer deltas with a wrong since= (an unusable reply)
	dropResume   bool          // ignore resume requests altogether (a server that does not parse them)
	heldReq      [][]byte      // a held request's frames
	heldUntil    time.Time
}

// publishRaw sends m with the next sequence, without storing it.
func (f *fakeState) publishRaw(m kvmsg.Msg) {
	f.seq++
	m.Seq = f.seq
	_ = transport.SendMessage(f.pub, m.Frames(), zmq.DONTWAIT)
}

func (f *fakeState) hugzMsg() kvmsg.Msg {
	m := kvmsg.Msg{Key: []byte(kvmsg.KeyHeartbeat)}
	if f.history != "" {
		m.Props = kvmsg.SetProp(m.Props, "history", f.history)
	}
	if f.resume {
		m.Props = kvmsg.SetProp(m.Props, kvmsg.PropResume, kvmsg.ResumeOffered)
	}
	if f.hugzSeqProp {
		m.Props = kvmsg.SetProp(m.Props, "seq", fmt.Sprint(f.seq))
	}
	if f.hugzSeqFrame {
		m.Seq = f.seq
	}
	return m
}

// publish stores key=value under the next sequence and publishes it unless
// drop is set (a lost update, as the PUB's high-water mark loses them).
// An empty value deletes key. The update is retained for resume.
func (f *fakeState) publish(key, value string, drop bool) {
	f.seq++
	if value == "" {
		delete(f.kv, key)
	} else {
		f.kv[key] = value
	}
	m := kvmsg.Msg{Key: []byte(key), Seq: f.seq, Body: []byte(value)}
	if value != "" {
		m.UUID = make([]byte, kvmsg.UUIDLen)
		m.UUID[0] = byte(f.seq)
	}
	f.log = append(f.log, m)
	if !drop {
		_ = transport.SendMessage(f.pub, m.Frames(), zmq.DONTWAIT)
	}
}

// retain keeps only the updates from sequence from on (the older ones are
// compacted away).
func (f *fakeState) retain(from int64) {
	f.retainFrom = from
	i := 0
	for i < len(f.log) && f.log[i].Seq < from {
		i++
	}
	f.log = append([]kvmsg.Msg(nil), f.log[i:]...)
}

// answerResume decides a resume request as the contract says: the
// updates after since, or a whole snapshot and why.
func (f *fakeState) answerResume(props []byte, subtree string) (delta []kvmsg.Msg, reason string) {
	hist, hok := kvmsg.LookupProp(props, kvmsg.PropHistory)
	sinceRaw, sok := kvmsg.LookupProp(props, kvmsg.PropSince)
	since, err := strconv.ParseInt(string(sinceRaw), 10, 64)
	oldest := f.retainFrom
	if oldest == 0 {
		oldest = 1
	}
	switch {
	case kvmsg.ValidateProps(props) != nil || !hok || !sok || err != nil || since < 0:
		return nil, "bad_request"
	case string(hist) != f.history:
		return nil, "history"
	case since > f.seq:
		return nil, "ahead"
	case since < oldest-1:
		return nil, "compacted"
	}
	delta = []kvmsg.Msg{}
	for _, m := range f.log {
		if m.Seq > since && strings.HasPrefix(string(m.Key), subtree) {
			delta = append(delta, m)
		}
	}
	return delta, ""
}

func startFake(t testing.TB) *fakeServer {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	var router, pub *zmq.Socket
	port := 0
	for try := 0; try < 50 && port == 0; try++ {
		p := testkit.FreePorts(t)
		router, err = transport.Bind(zctx, zmq.ROUTER, fmt.Sprintf("tcp://127.0.0.1:%d", p), transport.Options{SndHWM: 1 << 21}) // whole snapshots of 100,000 keys at once
		if err != nil {
			continue
		}
		if pub, err = transport.Bind(zctx, zmq.PUB, fmt.Sprintf("tcp://127.0.0.1:%d", p+1), transport.Options{}); err != nil {
			router.Close()
			continue
		}
		port = p
	}
	if port == 0 {
		t.Fatalf("no port for the fake server: %v", err)
	}
	f := &fakeServer{port: port, cmds: make(chan func(*fakeState)), done: make(chan struct{})}
	stop := make(chan struct{})
	go func() {
		defer close(f.done)
		defer zctx.Term()
		defer pub.Close()
		defer router.Close()
		st := &fakeState{pub: pub, kv: map[string]string{}, hugz: true}
		poller := zmq.NewPoller()
		poller.Add(router, zmq.POLLIN)
		nextHugz := time.Now()
		for {
			select {
			case <-stop:
				return
			case cmd := <-f.cmds:
				cmd(st)
				continue
			default:
			}
			if st.hugz && time.Now().After(nextHugz) {
				_ = transport.SendMessage(pub, st.hugzMsg().Frames(), zmq.DONTWAIT)
				st.lastHugz = time.Now()
				every := st.hugzEvery
				if every == 0 {
					every = 50 * time.Millisecond
				}
				nextHugz = time.Now().Add(every)
			}
			var frames [][]byte
			if st.heldReq != nil && time.Now().After(st.heldUntil) {
				frames, st.heldReq = st.heldReq, nil
			} else {
				polled, err := poller.Poll(5 * time.Millisecond)
				if err != nil || len(polled) == 0 {
					continue
				}
				frames, _, err = transport.RecvMessage(router, zmq.DONTWAIT, nil)
				if err != nil || len(frames) < 3 || len(frames) > 4 || string(frames[1]) != kvmsg.CmdSnapshot {
					continue
				}
				if len(frames) == 4 && !st.resume {
					st.strayResume++
				}
				if len(frames) == 4 && st.dropResume {
					continue
				}
				st.requests++
				if st.hold > 0 {
					st.heldReq, st.heldUntil = frames, time.Now().Add(st.hold)
					st.hold = 0
					continue
				}
			}
			if st.refuse > 0 {
				st.refuse--
				end := kvmsg.Msg{Key: []byte(kvmsg.KeySnapshotEnd), Props: []byte("refused=busy\n"), Body: frames[2]}
				_ = transport.SendMessage(router, append([][]byte{frames[0]}, end.Frames()...), 0)
				continue
			}
			if st.garbage {
				for range 6 {
					_ = transport.SendMessage(router, [][]byte{frames[0], []byte("k"), make([]byte, 8), nil, []byte("no-newline"), []byte("v")}, 0)
				}
				continue
			}
			var props []byte
			if st.history != "" {
				props = kvmsg.SetProp(nil, "history", st.history)
			}
			if st.resume && len(frames) == 4 {
				st.resumeReqs = append(st.resumeReqs, string(frames[3]))
				delta, reason := st.answerResume(frames[3], string(frames[2]))
				if delta != nil {
					for _, m := range delta {
						_ = transport.SendMessage(router, append([][]byte{frames[0]}, m.Frames()...), 0)
					}
					since, _ := kvmsg.LookupProp(frames[3], kvmsg.PropSince)
					if st.badSince {
						since = []byte("1")
					}
					props = kvmsg.SetProp(kvmsg.SetProp(props, kvmsg.PropResume, kvmsg.ResumeDelta), kvmsg.PropSince, string(since))
					end := kvmsg.Msg{Key: []byte(kvmsg.KeySnapshotEnd), Seq: st.seq, Props: props, Body: frames[2]}
					st.replies = append(st.replies, string(props))
					_ = transport.SendMessage(router, append([][]byte{frames[0]}, end.Frames()...), 0)
					continue
				}
				props = kvmsg.SetProp(kvmsg.SetProp(props, kvmsg.PropResume, kvmsg.ResumeFull), kvmsg.PropReason, reason)
			} else if st.resume {
				props = kvmsg.SetProp(props, kvmsg.PropResume, kvmsg.ResumeOffered)
			}
			keys := make([]string, 0, len(st.kv))
			for k := range st.kv {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if !strings.HasPrefix(k, string(frames[2])) {
					continue
				}
				m := kvmsg.Msg{Key: []byte(k), Seq: st.seq, Body: []byte(st.kv[k])}
				_ = transport.SendMessage(router, append([][]byte{frames[0]}, m.Frames()...), 0)
			}
			end := kvmsg.Msg{Key: []byte(kvmsg.KeySnapshotEnd), Seq: st.seq, Props: props, Body: frames[2]}
			st.replies = append(st.replies, string(props))
			_ = transport.SendMessage(router, append([][]byte{frames[0]}, end.Frames()...), 0)
		}
	}()
	t.Cleanup(func() { close(stop); <-f.done })
	return f
}

func (f *fakeServer) endpoint() string { return fmt.Sprintf("tcp://127.0.0.1:%d", f.port) }

// do runs fn in the fake's goroutine and waits for it.
func (f *fakeServer) do(fn func(*fakeState)) {
	ran := make(chan struct{})
	f.cmds <- func(s *fakeState) { fn(s); close(ran) }
	<-ran
}

func (f *fakeServer) state() (map[string]string, int64) {
	var kv map[string]string
	var seq int64
	f.do(func(s *fakeState) { kv, seq = maps.Clone(s.kv), s.seq })
	return kv, seq
}

// waitSame waits until the client is synced at the fake's sequence, then
// requires equal maps.
func (f *fakeServer) waitSame(t testing.TB, c *Client) {
	t.Helper()
	want, seq := f.state()
	waitFor(t, 20*time.Second, fmt.Sprintf("client synced at %d", seq), func() bool {
		st := c.Stats()
		return st.Synced && st.Seq == seq
	})
	if got := c.Snapshot().Map(); !maps.Equal(got, want) {
		t.Fatalf("client differs from the fake server at %d:\n%s", seq, diffMaps(got, want))
	}
}

// TestGapAndBackwards drives the three sequence faults: a lost update (gap),
// a restart without a disconnect (sequence backwards), and HUGZ, which carry
// sequence 0 and must not count as either.
func TestGapAndBackwards(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	f.do(func(s *fakeState) {
		for i := range 10 {
			s.publish(fmt.Sprintf("k%d", i), "v", false)
		}
	})
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second})
	events := c.Watch(t.Context())
	f.waitSame(t, c)
	// Several HUGZ (seq 0) go by.
	waitFor(t, 5*time.Second, "HUGZ heard", func() bool { return c.Stats().Heartbeats >= 5 })
	if st := c.Stats(); st.Resyncs != 0 {
		t.Fatalf("HUGZ must be heard and not count as a sequence fault: %+v", st)
	}

	// Gap: update 12 is lost on the way, 13 arrives.
	f.do(func(s *fakeState) {
		s.publish("k1", "a", false)
		s.publish("k2", "lost", true)
		s.publish("k3", "c", false)
	})
	if ev := nextEvent(t, events, EventResyncStarted, 3*time.Second); ev.Reason == "" {
		t.Fatalf("resync without a reason: %+v", ev)
	}
	// The lost value arrives through the re-join's difference events.
	if ev := nextEvent(t, events, EventUpdate, 3*time.Second); ev.Key != "k2" || string(ev.Value) != "lost" {
		t.Fatalf("after the re-join: %+v, want the lost k2=lost", ev)
	}
	nextEvent(t, events, EventResyncDone, 3*time.Second)
	f.waitSame(t, c)
	if st := c.Stats(); st.Gaps != 1 {
		t.Fatalf("gaps = %d, want 1", st.Gaps)
	}

	// Backwards: the server "restarts" at sequence 0 with a new map, on the
	// same connection.
	f.do(func(s *fakeState) {
		s.kv, s.seq = map[string]string{}, 0
		s.publish("fresh", "1", false)
	})
	nextEvent(t, events, EventResyncStarted, 3*time.Second)
	done := nextEvent(t, events, EventResyncDone, 3*time.Second)
	if done.Keys != 1 || done.Seq != 1 {
		t.Fatalf("after restart: %+v, want 1 key at seq 1", done)
	}
	f.waitSame(t, c)
	if st := c.Stats(); st.Restarts != 1 {
		t.Fatalf("restarts = %d, want 1 (%+v)", st.Restarts, st)
	}
}
