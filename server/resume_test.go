package server

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
)

// reply is what a DEALER received for one ICANHAZ?: the raw frames of each
// message before the KTHXBAI, and the KTHXBAI.
type reply struct {
	raw [][][]byte
	end kvmsg.Msg
}

func (r reply) prop(name string) string {
	v, _ := kvmsg.LookupProp(r.end.Props, name)
	return string(v)
}

// resumeProps is a resume request's third frame.
func resumeProps(history string, since int64) []byte {
	return []byte("history=" + history + "\nsince=" + strconv.FormatInt(since, 10) + "\n")
}

// ask sends ICANHAZ? with the given frames after the command and collects
// the reply up to its KTHXBAI. This is the raw resume requester: a DEALER
// sending the three frames of the extension (or the plain two).
func ask(t testing.TB, dealer *zmq.Socket, d time.Duration, frames ...[]byte) reply {
	t.Helper()
	send(t, dealer, append([][]byte{[]byte(kvmsg.CmdSnapshot)}, frames...)...)
	var r reply
	deadline := time.Now().Add(d)
	for {
		f := recv(t, dealer, time.Until(deadline))
		m, err := kvmsg.Decode(f, kvmsg.Limits{})
		if err != nil {
			t.Fatalf("reply decode: %v", err)
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			r.end = m
			return r
		}
		r.raw = append(r.raw, f)
	}
}

func resume(t testing.TB, dealer *zmq.Socket, subtree, history string, since int64) reply {
	t.Helper()
	return ask(t, dealer, 10*time.Second, []byte(subtree), resumeProps(history, since))
}

// recorder keeps every KVPUB a SUB receives, as raw frames, by sequence.
type recorder struct {
	sub  *zmq.Socket
	pubs map[int64][][]byte
	last int64
}

func (r *recorder) until(t testing.TB, seq int64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for r.last < seq {
		f := recv(t, r.sub, time.Until(deadline))
		if string(f[0]) == kvmsg.KeyHeartbeat {
			continue
		}
		s := int64(0)
		for _, b := range f[1] {
			s = s<<8 | int64(b)
		}
		r.pubs[s] = f
		r.last = max(r.last, s)
	}
}

// expect is what a delta for (since, to] under subtree must hold: the
// recorded KVPUBs, in sequence order.
func (r *recorder) expect(t testing.TB, subtree string, since, to int64) [][][]byte {
	t.Helper()
	var out [][][]byte
	for s := since + 1; s <= to; s++ {
		f, ok := r.pubs[s]
		if !ok {
			t.Fatalf("the subscriber never got sequence %d", s)
		}
		if strings.HasPrefix(string(f[0]), subtree) {
			out = append(out, f)
		}
	}
	return out
}

func sameFrames(t testing.TB, what string, got, want [][][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range got {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("%s: message %d has %d frames, want %d", what, i, len(got[i]), len(want[i]))
		}
		for j := range got[i] {
			if !bytes.Equal(got[i][j], want[i][j]) {
				t.Fatalf("%s: message %d frame %d is %q, published %q", what, i, j, got[i][j], want[i][j])
			}
		}
	}
}

// TestResume checks every reply of the extension against what a raw
// subscriber saw published.
func TestResume(t *testing.T) {
	srv := startServer(t, Config{ReapInterval: 20 * time.Millisecond})
	p := newPeer(t, srv.Port())
	push, dealer := p.push(), p.dealer()
	rec := &recorder{sub: p.sub(""), pubs: map[int64][][]byte{}}
	subscribed(t, push, rec.sub, "/ping")

	for i := range 40 {
		set(t, push, fmt.Sprintf("/r/%c/%d", 'a'+i%2, i), fmt.Sprint("old", i))
	}
	waitFor(t, 5*time.Second, "40 updates", func() bool { return srv.Stats().UpdatesAccepted.Load() >= 41 })
	plain := ask(t, dealer, 5*time.Second, []byte("/r/"))
	history := plain.prop(kvmsg.PropHistory)
	if len(history) != 32 || plain.prop(kvmsg.PropResume) != kvmsg.ResumeOffered {
		t.Fatalf("plain KTHXBAI props %q: want history=<id> and resume=1", plain.end.Props)
	}
	if want := "history=" + history + "\nresume=1\n"; string(plain.end.Props) != want {
		t.Fatalf("plain KTHXBAI props %q, want %q", plain.end.Props, want)
	}
	since := plain.end.Seq

	// What the client missed: sets, overwrites, ttl'd keys that then
	// expire, deletes, in both subtrees and outside them.
	for i := range 60 {
		key := fmt.Sprintf("/r/%c/%d", 'a'+i%2, i%50)
		switch {
		case i%11 == 5:
			set(t, push, fmt.Sprintf("/r/%c/ttl%d", 'a'+i%2, i), "brief", "ttl", "0.2")
		case i%7 == 3:
			set(t, push, key, "") // a delete
		default:
			set(t, push, key, fmt.Sprint("new", i), "owner", "me")
		}
		set(t, push, fmt.Sprintf("/other/%d", i), "x")
	}
	waitFor(t, 10*time.Second, "the ttl'd keys to expire", func() bool { return srv.Stats().Expirations.Load() >= 5 })
	for _, sub := range []string{"/r/", "/r/a/", "", "/nothing/"} {
		got := resume(t, dealer, sub, history, since)
		if got.prop(kvmsg.PropResume) != kvmsg.ResumeDelta || got.prop(kvmsg.PropSince) != fmt.Sprint(since) || got.prop(kvmsg.PropHistory) != history {
			t.Fatalf("subtree %q: KTHXBAI props %q, want a delta since %d", sub, got.end.Props, since)
		}
		if string(got.end.Body) != sub {
			t.Fatalf("KTHXBAI body %q, want the subtree %q", got.end.Body, sub)
		}
		rec.until(t, got.end.Seq, 10*time.Second)
		sameFrames(t, fmt.Sprintf("delta of %q since %d", sub, since), got.raw, rec.expect(t, sub, since, got.end.Seq))
	}
	deletes := 0
	for _, f := range rec.expect(t, "/r/", since, rec.last) {
		if len(f[4]) == 0 {
			deletes++
		}
	}
	if deletes != 8+5 {
		t.Fatalf("the missed updates hold %d deletes, want 8 deletes and 5 expiries", deletes)
	}

	seq := srv.Stats().Sequence.Load()
	// Nothing missed.
	if got := resume(t, dealer, "/r/", history, seq); len(got.raw) != 0 || got.end.Seq != seq || got.prop(kvmsg.PropResume) != kvmsg.ResumeDelta {
		t.Fatalf("since == S: %d messages, KTHXBAI %d %q", len(got.raw), got.end.Seq, got.end.Props)
	}
	full, _ := snapshot(t, dealer, "/r/", 5*time.Second)
	checkFull := func(what string, got reply, reason string) {
		t.Helper()
		if got.prop(kvmsg.PropResume) != kvmsg.ResumeFull || got.prop(kvmsg.PropReason) != reason || got.prop(kvmsg.PropHistory) != history {
			t.Fatalf("%s: KTHXBAI props %q, want resume=full reason=%s", what, got.end.Props, reason)
		}
		if len(got.raw) != len(full) {
			t.Fatalf("%s: %d KVSYNCs, the snapshot has %d", what, len(got.raw), len(full))
		}
		for i, f := range got.raw {
			if string(f[0]) != string(full[i].Key) || string(f[4]) != string(full[i].Body) {
				t.Fatalf("%s: KVSYNC %d is %q=%q, the snapshot's %q=%q", what, i, f[0], f[4], full[i].Key, full[i].Body)
			}
		}
	}
	checkFull("since > S", resume(t, dealer, "/r/", history, seq+1), actors.FullAhead)
	checkFull("other history", resume(t, dealer, "/r/", strings.Repeat("0f", 16), since), actors.FullHistory)
	before := srv.Stats().Rejects()
	for _, bad := range []string{"since=5\n", "history=" + history + "\n", "history=" + history + "\nsince=-1\n",
		"history=" + history + "\nsince=x\n", "history=" + strings.ToUpper(history) + "\nsince=1\n", "no newline", "history=" + history + "\nsince=+1\n"} {
		checkFull(fmt.Sprintf("props %q", bad), ask(t, dealer, 5*time.Second, []byte("/r/"), []byte(bad)), actors.FullBadRequest)
	}
	if n := rejects(srv.Stats(), actors.ReasonResumeRequest) - rejectsIn(before, actors.ReasonResumeRequest); n != 7 {
		t.Fatalf("%d malformed resume requests counted, want 7", n)
	}
	// Counted once the router reports the KTHXBAI written (just after the
	// client has it).
	st := srv.Stats()
	waitFor(t, 5*time.Second, "the resume counts", func() bool {
		return st.Resumes.Get(kvmsg.ResumeDelta) == 5 && st.Resumes.Get("full:ahead") == 1 && st.Resumes.Get("full:history") == 1 && st.Resumes.Get("full:bad_request") == 7
	})
	if st.ResumeMessages.Get(kvmsg.ResumeFull) != int64(9*len(full)) || st.ResumeBytes.Get(kvmsg.ResumeDelta) == 0 {
		t.Fatalf("resume messages %v bytes %v", st.ResumeMessages.All(), st.ResumeBytes.All())
	}
	// HUGZ offers resume too.
	waitFor(t, 5*time.Second, "HUGZ with resume=1", func() bool {
		f, err := testkit.RecvWithin(rec.sub, time.Second)
		if err != nil || string(f[0]) != kvmsg.KeyHeartbeat {
			return false
		}
		v, _ := kvmsg.LookupProp(f[3], kvmsg.PropResume)
		return string(v) == kvmsg.ResumeOffered
	})
}

func rejects(st *stats.Server, reason string) int64 { return rejectsIn(st.Rejects(), reason) }

func rejectsIn(rs []stats.RejectCount, reason string) int64 {
	var n int64
	for _, r := range rs {
		if r.Source == stats.SourceSnapshot && r.Reason == reason {
			n += r.Count
		}
	}
	return n
}

// A window bounded in bytes drops its oldest updates: a request from before
// them gets a full snapshot (compacted), one from the window's start a
// delta of everything after it.
func TestResumeCompacted(t *testing.T) {
	const limit = 16 << 10
	srv := startServer(t, Config{ResumeWindow: limit})
	p := newPeer(t, srv.Port())
	push, dealer := p.push(), p.dealer()
	const n = 2000
	for i := range n {
		set(t, push, fmt.Sprintf("/c/%d", i%100), strings.Repeat("v", 40))
	}
	waitFor(t, 10*time.Second, "the updates", func() bool { return srv.Stats().Sequence.Load() == n })
	st := srv.Stats()
	base, span, size := st.ResumeWindowBase.Load(), st.ResumeWindowSequences.Load(), st.ResumeWindowBytes.Load()
	if base <= 0 || base+span != n || size > limit || size < limit/2 {
		t.Fatalf("window after %d updates: base %d span %d, %d bytes (bound %d)", n, base, span, size, limit)
	}
	if oldest := st.ResumeWindowOldestNanos.Load(); oldest == 0 || time.Since(time.Unix(0, oldest)) > time.Minute {
		t.Fatalf("oldest update in the window at %v", time.Unix(0, oldest))
	}
	history := srv.History()
	got := resume(t, dealer, "", history, base-1)
	if got.prop(kvmsg.PropResume) != kvmsg.ResumeFull || got.prop(kvmsg.PropReason) != actors.FullCompacted || len(got.raw) != 100 {
		t.Fatalf("since before the window: %d messages, props %q", len(got.raw), got.end.Props)
	}
	got = resume(t, dealer, "", history, base)
	if got.prop(kvmsg.PropResume) != kvmsg.ResumeDelta || int64(len(got.raw)) != span || got.end.Seq != n {
		t.Fatalf("since the window's start: %d messages (span %d), props %q", len(got.raw), span, got.end.Props)
	}
	for i, f := range got.raw {
		if s := int64(bytesSeq(f[1])); s != base+1+int64(i) {
			t.Fatalf("delta message %d has sequence %d, want %d", i, s, base+1+int64(i))
		}
	}
}

func bytesSeq(b []byte) uint64 {
	var s uint64
	for _, c := range b {
		s = s<<8 | uint64(c)
	}
	return s
}

// Updates keep coming while clients resume: each delta is exactly the run
// of sequences up to its KTHXBAI (the store takes the view and the window
// in one step).
func TestResumeWhileUpdating(t *testing.T) {
	srv := startServer(t, Config{})
	p := newPeer(t, srv.Port())
	dealer := p.dealer()
	rec := &recorder{sub: p.sub(""), pubs: map[int64][][]byte{}}
	subscribed(t, p.push(), rec.sub, "/ping")
	since := srv.Stats().Sequence.Load()
	history := srv.History()

	// The writer sends rounds of updates, each released by the loop below
	// before it asks again, so every request meets updates in flight.
	const rounds, perRound = 20, 200
	const updates = rounds * perRound
	writer := newPeer(t, srv.Port())
	push := writer.push()
	next := make(chan struct{}, rounds)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the writer's socket is used by this goroutine alone
		defer wg.Done()
		for r := range rounds {
			<-next
			for i := range perRound {
				m := kvmsg.Msg{Key: fmt.Appendf(nil, "/w/%d", (r*perRound+i)%300), Body: fmt.Append(nil, r*perRound+i)}
				if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
					t.Error(err) // not Fatal: this is not the test's goroutine
					return
				}
			}
		}
	}()
	checked, mid := 0, 0
	for deadline := time.Now().Add(60 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("after %d deltas the server is at %d, want %d", checked, srv.Stats().Sequence.Load(), since+updates)
		}
		if checked < rounds {
			next <- struct{}{}
		}
		got := resume(t, dealer, "", history, since)
		if got.prop(kvmsg.PropResume) != kvmsg.ResumeDelta {
			t.Fatalf("props %q", got.end.Props)
		}
		if int64(len(got.raw)) != got.end.Seq-since {
			t.Fatalf("delta since %d up to %d has %d messages", since, got.end.Seq, len(got.raw))
		}
		for i, f := range got.raw {
			if s := int64(bytesSeq(f[1])); s != since+1+int64(i) {
				t.Fatalf("delta message %d has sequence %d, want %d", i, s, since+1+int64(i))
			}
		}
		rec.until(t, got.end.Seq, 10*time.Second)
		sameFrames(t, "delta while updating", got.raw, rec.expect(t, "", since, got.end.Seq))
		checked++
		if (got.end.Seq-since)%perRound != 0 {
			mid++ // taken while a round was being applied
		}
		if got.end.Seq >= since+updates {
			break
		}
	}
	wg.Wait()
	t.Logf("%d deltas checked while %d updates went in, %d of them taken mid-round", checked, updates, mid)
}

// Resume off: nothing is offered, and a resume request gets a full
// snapshot, reason=disabled.
func TestResumeDisabled(t *testing.T) {
	srv := startServer(t, Config{ResumeWindow: -1})
	p := newPeer(t, srv.Port())
	push, dealer, sub := p.push(), p.dealer(), p.sub("")
	subscribed(t, push, sub, "/ping")
	plain := ask(t, dealer, 5*time.Second, []byte(""))
	history := plain.prop(kvmsg.PropHistory)
	if string(plain.end.Props) != "history="+history+"\n" || len(plain.raw) != 1 {
		t.Fatalf("plain KTHXBAI props %q (%d keys), want history only", plain.end.Props, len(plain.raw))
	}
	got := resume(t, dealer, "", history, plain.end.Seq)
	if got.prop(kvmsg.PropResume) != kvmsg.ResumeFull || got.prop(kvmsg.PropReason) != actors.FullDisabled || len(got.raw) != 1 {
		t.Fatalf("resume with the window off: %d messages, props %q", len(got.raw), got.end.Props)
	}
	for range 3 {
		f := recv(t, sub, 5*time.Second)
		if string(f[0]) == kvmsg.KeyHeartbeat {
			if _, ok := kvmsg.LookupProp(f[3], kvmsg.PropResume); ok {
				t.Fatalf("HUGZ %q offers resume with the window off", f[3])
			}
			return
		}
	}
	t.Fatal("no HUGZ")
}

// Across a durable restart (a graceful stop takes a final snapshot, which
// carries the window): the same window, and a resume request gets a delta.
func TestResumeAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{ResumeWindow: 32 << 10, Log: LogConfig{DataDir: dir}}
	srv, run := startDurable(t, cfg)
	p := newPeer(t, srv.Port())
	push, dealer := p.push(), p.dealer()
	for i := range 1500 {
		set(t, push, fmt.Sprintf("/d/%d", i%40), strings.Repeat("x", i%50+1))
	}
	waitFor(t, 10*time.Second, "1500 updates", func() bool { return srv.Stats().Sequence.Load() == 1500 })
	history := srv.History()
	since := int64(1450)
	before := resume(t, dealer, "/d/", history, since)
	base, span := srv.Stats().ResumeWindowBase.Load(), srv.Stats().ResumeWindowSequences.Load()
	if base == 0 {
		t.Fatalf("the window dropped nothing (span %d): the test does not exercise the bound", span)
	}
	if before.prop(kvmsg.PropResume) != kvmsg.ResumeDelta || len(before.raw) != 50 {
		t.Fatalf("before the restart: %d messages, props %q", len(before.raw), before.end.Props)
	}
	run.Stop(t)

	again, _ := startDurable(t, cfg)
	if again.History() != history || again.Stats().Sequence.Load() != 1500 {
		t.Fatalf("restarted with history %q sequence %d", again.History(), again.Stats().Sequence.Load())
	}
	st := again.Stats()
	if st.ResumeWindowBase.Load() != base || st.ResumeWindowSequences.Load() != span {
		t.Fatalf("window after the restart (%d, +%d], before (%d, +%d]", st.ResumeWindowBase.Load(), st.ResumeWindowSequences.Load(), base, span)
	}
	p2 := newPeer(t, again.Port())
	after := resume(t, p2.dealer(), "/d/", history, since)
	if after.prop(kvmsg.PropResume) != kvmsg.ResumeDelta || after.end.Seq != 1500 {
		t.Fatalf("after the restart: props %q seq %d", after.end.Props, after.end.Seq)
	}
	sameFrames(t, "delta after the restart", after.raw, before.raw)
	if got := resume(t, p2.dealer(), "", history, base); int64(len(got.raw)) != span {
		t.Fatalf("whole window after the restart: %d messages, span %d", len(got.raw), span)
	}
}

// startDurable runs a server on 127.0.0.1 that the test may stop.
func startDurable(t testing.TB, cfg Config) (*Server, *testkit.Running) {
	t.Helper()
	cfg.Bind, cfg.Logger = "127.0.0.1", testLogger(t)
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return srv, testkit.Serve(t, srv, 15*time.Second)
}

// An update the store rejects (here: the key bound) takes no sequence, so
// the window has no gap and the delta holds exactly the accepted updates.
func TestResumeSkipsRejected(t *testing.T) {
	srv := startServer(t, Config{MaxKeys: 5})
	p := newPeer(t, srv.Port())
	push, dealer := p.push(), p.dealer()
	rec := &recorder{sub: p.sub("/m/"), pubs: map[int64][][]byte{}}
	subscribed(t, push, rec.sub, "/m/ping")
	since := srv.Stats().Sequence.Load()
	for i := range 10 {
		set(t, push, fmt.Sprintf("/m/%d", i), "v") // /m/4 and later: over the bound (with /m/ping)
	}
	set(t, push, "/m/0", "again")
	waitFor(t, 5*time.Second, "the rejections", func() bool { return rejectCountAny(srv.Stats(), "max_keys") == 6 })
	waitFor(t, 5*time.Second, "the accepted updates", func() bool { return srv.Stats().Sequence.Load() == since+5 })
	got := resume(t, dealer, "/m/", srv.History(), since)
	if got.prop(kvmsg.PropResume) != kvmsg.ResumeDelta || got.end.Seq != since+5 {
		t.Fatalf("props %q seq %d", got.end.Props, got.end.Seq)
	}
	rec.until(t, since+5, 5*time.Second)
	sameFrames(t, "delta around rejected updates", got.raw, rec.expect(t, "/m/", since, since+5))
}

func rejectCountAny(st *stats.Server, reason string) int64 {
	var n int64
	for _, r := range st.Rejects() {
		if r.Reason == reason {
			n += r.Count
		}
	}
	return n
}
