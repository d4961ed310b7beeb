package actors_test

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/raftlog"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
	"github.com/clonekv/clonekv/transport/adapter"
)

// fuzzMaxSubtree is the subtree limit of the fuzzed responder.
const fuzzMaxSubtree = 32

// fuzzRouter stands in for adapter.Router: it records what the snapshot
// responder sends to each peer (copied: chunk buffers are reused once
// reported sent), reports each chunk sent, or — at a chosen chunk — reports
// the peer gone, and tells the test when a stream ends.
type fuzzRouter struct {
	mu     sync.Mutex
	peers  map[string]*fuzzPeer
	strays int // sends for peers the test did not register
}

type fuzzPeer struct {
	failAt int // chunk number (1-based) reported ErrPeerGone; 0: never
	chunks int
	msgs   [][][]byte
	done   chan bool // true: KTHXBAI delivered; false: aborted
}

func (r *fuzzRouter) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(*adapter.Send)
	if !ok {
		return
	}
	r.mu.Lock()
	p := r.peers[string(m.Peer)]
	if p == nil {
		r.strays++
		r.mu.Unlock()
		ctx.Send(m.ReplyTo, &adapter.Sent{Tag: m.Tag, Err: adapter.ErrPeerGone})
		return
	}
	p.chunks++
	if p.chunks == p.failAt {
		r.mu.Unlock()
		ctx.Send(m.ReplyTo, &adapter.Sent{Tag: m.Tag, Err: adapter.ErrPeerGone})
		p.done <- false
		return
	}
	final := false
	for i := range m.Msgs.Len() {
		msg := m.Msgs.Message(i)
		cp := make([][]byte, len(msg))
		for j, f := range msg {
			cp[j] = bytes.Clone(f)
		}
		p.msgs = append(p.msgs, cp)
		final = final || string(msg[0]) == kvmsg.KeySnapshotEnd
	}
	r.mu.Unlock()
	ctx.Send(m.ReplyTo, &adapter.Sent{Tag: m.Tag})
	if final {
		p.done <- true
	}
}

// snapshotRig is one actor system with a filled store, a snapshot
// responder and the fake router, shared by all inputs of a fuzz process.
type snapshotRig struct {
	sys      *actor.ActorSystem
	snapshot *actor.PID
	router   *fuzzRouter
	st       *stats.Server
	model    map[string]string
	seq      int64
	next     atomic.Int64
}

// The keys share prefixes so that subtrees select a few, many (more than
// one chunk) or none of them.
func newSnapshotRig(t testing.TB) *snapshotRig {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet }))
	rig := &snapshotRig{sys: sys, router: &fuzzRouter{peers: map[string]*fuzzPeer{}}, st: &stats.Server{}, model: map[string]string{}}
	store := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return actors.NewStore(actors.StoreConfig{Stats: rig.st})
	}))
	routerPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return rig.router }))
	rig.snapshot = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return actors.NewSnapshot(actors.SnapshotConfig{
			Router: routerPID, Store: store, Stats: rig.st, Log: &stats.RejectLog{Stats: rig.st, Logger: quiet},
			MaxSubtree: fuzzMaxSubtree, ChunkSize: 16, InFlight: 2, MaxStreams: 4,
		})
	}))
	var items []raftlog.Op
	add := func(k, v string) {
		rig.model[k] = v
		items = append(items, raftlog.Op{Kind: raftlog.OpSet, Msg: kvmsg.Msg{Key: []byte(k), Body: []byte(v)}})
	}
	for i := range 40 {
		add(fmt.Sprintf("/a/%02d", i), "a"+strconv.Itoa(i))
	}
	for i := range 5 {
		add(fmt.Sprintf("/b/%d", i), "b")
	}
	for _, k := range []string{"/", "/a", "/ab", "x", "\x00", "\xff\xfe", "ICANHAZ?", "a\nb"} {
		add(k, "v:"+k)
	}
	// What the raft FSM hands the store once the entry is committed.
	sys.Root.Send(store, &raftlog.Batch{Entries: []raftlog.Applied{{Index: 1, Entry: raftlog.Entry{Kind: raftlog.KindOps, Ops: items}}}})
	rig.seq = int64(len(items))
	deadline := time.Now().Add(5 * time.Second)
	for rig.st.Sequence.Load() != rig.seq {
		if time.Now().After(deadline) {
			t.Fatalf("store not filled: sequence %d", rig.st.Sequence.Load())
		}
		time.Sleep(time.Millisecond)
	}
	return rig
}

// check sends one request and checks the responder's answer against the
// protocol: a malformed request is counted under its reason and answered
// with nothing; a valid one gets every stored key under the subtree, in key
// order, then KTHXBAI with the store's sequence and the subtree — unless
// the fake router reports the peer gone, which must abort the stream and
// free its slot. A third frame is a resume request (the rig's server has
// resume off, so a full snapshot answers it); a malformed one is counted
// (resume_request) and answered like a plain request.
func (rig *snapshotRig) check(t *testing.T, frames [][]byte, failAt int) {
	peer := []byte(fmt.Sprintf("peer-%d", rig.next.Add(1)))
	p := &fuzzPeer{failAt: failAt, done: make(chan bool, 1)}
	rig.router.mu.Lock()
	rig.router.peers[string(peer)] = p
	rig.router.mu.Unlock()

	kept := frames
	if len(kept) > transport.MaxFrames-1 {
		kept = kept[:transport.MaxFrames-1]
	}
	reason := ""
	switch {
	case len(frames) != 2 && len(frames) != 3:
		reason = actors.ReasonRequestFrames
	case string(frames[0]) != kvmsg.CmdSnapshot:
		reason = actors.ReasonUnknownCommand
	case len(frames[1]) > fuzzMaxSubtree:
		reason = actors.ReasonSubtreeTooLong
	case len(frames) == 3 && !wellFormedResume(frames[2]):
		reason = actors.ReasonResumeRequest
	}
	answered := reason == "" || reason == actors.ReasonResumeRequest
	rejected := rig.st.RejectedTotal(stats.SourceSnapshot)
	aborted := rig.st.SnapshotsAborted.Load()
	rig.sys.Root.Send(rig.snapshot, &adapter.Request{Peer: peer, Frames: kept, Count: len(frames)})

	if reason != "" {
		deadline := time.Now().Add(5 * time.Second)
		for rig.st.RejectedTotal(stats.SourceSnapshot) == rejected {
			if time.Now().After(deadline) {
				t.Fatalf("request %q (%d frames): no reject counted, want %s", kept, len(frames), reason)
			}
			time.Sleep(100 * time.Microsecond)
		}
		if n := rig.st.RejectedTotal(stats.SourceSnapshot); n != rejected+1 {
			t.Fatalf("request %q: %d rejects counted, want 1", kept, n-rejected)
		}
		if got := rejectCount(rig.st, reason); got == 0 {
			t.Fatalf("request %q: not counted as %s: %+v", kept, reason, rig.st.Rejects())
		}
	}
	if !answered {
		rig.router.mu.Lock()
		defer rig.router.mu.Unlock()
		if p.chunks != 0 {
			t.Fatalf("rejected request %q was answered with %d chunks", kept, p.chunks)
		}
		return
	}

	var ok bool
	select {
	case ok = <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("request for subtree %q: stream did not end", frames[1])
	}
	wantRejects := rejected
	if reason != "" {
		wantRejects++ // the malformed resume request, counted once
	}
	if rig.st.RejectedTotal(stats.SourceSnapshot) != wantRejects {
		t.Fatalf("request for %q: %d rejects counted, want %d", frames[1], rig.st.RejectedTotal(stats.SourceSnapshot)-rejected, wantRejects-rejected)
	}
	if !ok {
		deadline := time.Now().Add(5 * time.Second)
		for rig.st.SnapshotsAborted.Load() != aborted+1 || rig.st.StreamsInFlight.Load() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("aborted stream: %d aborts counted, %d streams in flight", rig.st.SnapshotsAborted.Load()-aborted, rig.st.StreamsInFlight.Load())
			}
			time.Sleep(100 * time.Microsecond)
		}
		return
	}
	subtree := string(frames[1])
	var want []string
	for k := range rig.model {
		if strings.HasPrefix(k, subtree) {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	rig.router.mu.Lock()
	msgs := p.msgs
	rig.router.mu.Unlock()
	if len(msgs) != len(want)+1 {
		t.Fatalf("subtree %q: %d messages, want %d KVSYNCs and KTHXBAI", subtree, len(msgs), len(want))
	}
	for i, k := range want {
		m, err := kvmsg.Decode(msgs[i], kvmsg.Limits{})
		if err != nil {
			t.Fatalf("subtree %q: KVSYNC %d: %v", subtree, i, err)
		}
		if string(m.Key) != k || string(m.Body) != rig.model[k] || m.Seq < 1 || m.Seq > rig.seq {
			t.Fatalf("subtree %q: KVSYNC %d is %q=%q seq %d, want %q=%q", subtree, i, m.Key, m.Body, m.Seq, k, rig.model[k])
		}
	}
	end, err := kvmsg.Decode(msgs[len(want)], kvmsg.Limits{})
	if err != nil || string(end.Key) != kvmsg.KeySnapshotEnd || end.Seq != rig.seq || string(end.Body) != subtree {
		t.Fatalf("subtree %q: last message %q (%v), want KTHXBAI seq %d body the subtree", subtree, msgs[len(want)], err, rig.seq)
	}
	if len(frames) == 3 {
		full := actors.FullDisabled // the rig's server runs without a window
		if reason != "" {
			full = actors.FullBadRequest
		}
		res, _ := kvmsg.LookupProp(end.Props, kvmsg.PropResume)
		why, _ := kvmsg.LookupProp(end.Props, kvmsg.PropReason)
		if string(res) != kvmsg.ResumeFull || string(why) != full {
			t.Fatalf("resume request %q: KTHXBAI props %q, want resume=full reason=%s", frames[2], end.Props, full)
		}
	}
}

// wellFormedResume is the model of a resume request's third frame:
// properties with history= (32 lowercase hex digits) and since= (decimal
// digits, an int64).
func wellFormedResume(props []byte) bool {
	if kvmsg.ValidateProps(props) != nil {
		return false
	}
	h, ok := kvmsg.LookupProp(props, kvmsg.PropHistory)
	if !ok || len(h) != 32 || strings.Trim(string(h), "0123456789abcdef") != "" {
		return false
	}
	since, ok := kvmsg.LookupProp(props, kvmsg.PropSince)
	if !ok || len(since) == 0 || strings.Trim(string(since), "0123456789") != "" {
		return false
	}
	_, err := strconv.ParseInt(string(since), 10, 64)
	return err == nil
}

func rejectCount(st *stats.Server, reason string) int64 {
	for _, r := range st.Rejects() {
		if r.Source == stats.SourceSnapshot && r.Reason == reason {
			return r.Count
		}
	}
	return 0
}

// fuzzFrames splits fuzz input into request frames: the first byte is the
// separator; up to 12 frames (more than the transport keeps).
func fuzzFrames(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	return bytes.SplitN(data[1:], data[:1], 12)
}

// FuzzSnapshotRequest feeds arbitrary requests (frames, and a chunk at
// which the peer disappears) to the snapshot responder, through
// protoactor without sockets. Seeds: the snapshot cases of
// testdata/malformed.txt and valid requests.
func FuzzSnapshotRequest(f *testing.F) {
	for _, frames := range corpusRequests(f) {
		f.Add(append([]byte{'|'}, bytes.Join(frames, []byte{'|'})...), uint8(0))
	}
	for _, sub := range []string{"", "/a/", "/a/1", "/b/", "/", "/zzz", "\xff", strings.Repeat("s", fuzzMaxSubtree)} {
		f.Add([]byte("|ICANHAZ?|"+sub), uint8(0))
		f.Add([]byte("|ICANHAZ?|"+sub), uint8(2))
	}
	f.Add([]byte("|ICANHAZ?|"+strings.Repeat("s", fuzzMaxSubtree+1)), uint8(0))
	// Resume requests: well-formed (full, disabled) and not.
	for _, props := range []string{"history=0123456789abcdef0123456789abcdef\nsince=5\n", "history=0123456789abcdef0123456789abcdef\nsince=x\n", "since=1\n", ""} {
		f.Add([]byte("|ICANHAZ?|/a/|"+props), uint8(0))
		f.Add([]byte("|ICANHAZ?|/a/|"+props), uint8(1))
	}
	rig := newSnapshotRig(f)
	f.Fuzz(func(t *testing.T, data []byte, failAt uint8) {
		rig.check(t, fuzzFrames(data), int(failAt%8))
	})
}

// corpusRequests reads the snapshot-port cases of the shared corpus of
// malformed messages (testdata/malformed.txt at the repository root).
func corpusRequests(t testing.TB) [][][]byte {
	b, err := os.ReadFile("../testdata/malformed.txt")
	if err != nil {
		t.Fatalf("malformed corpus: %v", err)
	}
	var out [][][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "snapshot ") {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		var frames [][]byte
		rest := strings.TrimSpace(f[2])
		for rest != "" {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				t.Fatalf("malformed.txt: %q: %v", line, err)
			}
			s, _ := strconv.Unquote(q)
			frames = append(frames, []byte(s))
			rest = strings.TrimSpace(rest[len(q):])
		}
		out = append(out, frames)
	}
	if len(out) == 0 {
		t.Fatal("malformed.txt: no snapshot cases")
	}
	return out
}
