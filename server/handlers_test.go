package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// logRecorder is a slog handler that keeps every record's message, level
// and attributes (flattened to strings), for tests that check what the
// server reported.
type logRecorder struct {
	mu    sync.Mutex
	recs  []logRec
	attrs []slog.Attr
	next  slog.Handler // also written here (the -v test log), may be nil
}

type logRec struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogRecorder() *logRecorder {
	return &logRecorder{next: testkit.Logger(slog.LevelDebug).Handler()}
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	rec := logRec{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range l.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	l.recs = append(l.recs, rec)
	l.mu.Unlock()
	if l.next != nil && l.next.Enabled(ctx, r.Level) {
		return l.next.WithAttrs(l.attrs).Handle(ctx, r)
	}
	return nil
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorderView{l, append(slices.Clone(l.attrs), as...)}
}
func (l *logRecorder) WithGroup(string) slog.Handler { return l }

// logRecorderView is the recorder with attributes added (Logger.With).
type logRecorderView struct {
	l     *logRecorder
	attrs []slog.Attr
}

func (v *logRecorderView) Enabled(ctx context.Context, lv slog.Level) bool { return true }
func (v *logRecorderView) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(v.attrs...)
	return v.l.Handle(ctx, r)
}
func (v *logRecorderView) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorderView{v.l, append(slices.Clone(v.attrs), as...)}
}
func (v *logRecorderView) WithGroup(string) slog.Handler { return v }

// find returns the records whose message contains msg and whose attribute
// key has value (any record when key is empty).
func (l *logRecorder) find(msg, key, value string) []logRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRec
	for _, r := range l.recs {
		if bytes.Contains([]byte(r.msg), []byte(msg)) && (key == "" || r.attrs[key] == value) {
			out = append(out, r)
		}
	}
	return out
}

// blockingHandler never returns from OnCommit until release is closed.
type blockingHandler struct{ release chan struct{} }

func (h *blockingHandler) OnCommit(actors.Batch) { <-h.release }

// panickingHandler panics on every batch.
type panickingHandler struct{}

func (panickingHandler) OnCommit(b actors.Batch) {
	panic(fmt.Sprintf("batch at %d", b.Updates[0].Msg.Seq))
}

// probingHandler calls everything it can reach on a batch, and changes
// whatever the calls hand back.
type probingHandler struct{}

func (probingHandler) OnCommit(b actors.Batch) {
	for i := range b.Updates {
		u := &b.Updates[i]
		m := u.Msg
		_, _ = m.Prop("n")
		_, _ = m.TTL()
		_ = m.IsDelete()
		for _, f := range m.Frames() {
			for j := range f {
				f[j] ^= 0xff
			}
		}
		seq := make([]byte, kvmsg.SeqLen)
		for _, f := range m.AppendFrames(nil, seq) {
			for j := range f {
				f[j] = 'p'
			}
		}
		u.Msg = m.SetProp("probe", "1").SetProp("n", "changed")
		u.Msg.Key = append(u.Msg.Key, "/appended"...)
		u.Msg.Body = append(u.Msg.Body, 'x')
	}
	b.Updates = append(b.Updates[:0], actors.Update{})
}

// mutatingHandler overwrites every byte and field of every update.
type mutatingHandler struct{}

func (mutatingHandler) OnCommit(b actors.Batch) {
	for i := range b.Updates {
		u := &b.Updates[i]
		for _, f := range [][]byte{u.Msg.Key, u.Msg.UUID, u.Msg.Props, u.Msg.Body} {
			for j := range f {
				f[j] = 'X'
			}
		}
		u.Msg.Seq, u.TTL, u.ExpiresAt, u.Expired = -1, time.Hour, time.Unix(0, 0), true
	}
}

// recordingHandler keeps a copy of every update it was given, and the
// drops it was told about.
type recordingHandler struct {
	mu      sync.Mutex
	ups     []kvmsg.Msg
	dropped int64
}

func (h *recordingHandler) OnCommit(b actors.Batch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropped += b.Dropped
	for _, u := range b.Updates {
		h.ups = append(h.ups, u.Msg) // the batch is ours to keep
	}
}

func (h *recordingHandler) snapshot() ([]kvmsg.Msg, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ups), h.dropped
}

// handlerLoad is the update stream of the handler tests: n updates over
// 500 keys, each with a UUID, a property and a 64-byte body that encode
// its index, so a receiver can check every byte.
func handlerLoad(i int) kvmsg.Msg {
	uuid := bytes.Repeat([]byte{byte(i)}, kvmsg.UUIDLen)
	body := fmt.Appendf(nil, "%064d", i)
	return kvmsg.Msg{Key: fmt.Appendf(nil, "/h/%03d", i%500), UUID: uuid, Body: body}.SetProp("n", fmt.Sprint(i))
}

// publishLoad sends n updates of handlerLoad and checks that the subscriber
// receives exactly them, in order, with consecutive sequences. It returns
// the time from the first send to the last receive.
func publishLoad(t *testing.T, srv *Server, n int) time.Duration {
	t.Helper()
	p := newPeer(t, srv.Port())
	push, sub := p.push(), p.sub("/h/")
	subscribed(t, push, sub, "/h/ping")
	base := srv.Stats().Sequence.Load()

	sent := make(chan error, 1)
	start := time.Now()
	go func() { // owns push from here
		for i := range n {
			if err := transport.SendMessage(push, handlerLoad(i).Frames(), 0); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < n; i++ {
		frames, err := testkit.RecvWithin(sub, time.Until(deadline))
		if err != nil {
			t.Fatalf("subscriber got %d of %d updates: %v (published %d)", i, n, err, srv.Stats().UpdatesPublished.Load())
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Key) == kvmsg.KeyHeartbeat {
			i--
			continue
		}
		want := handlerLoad(i)
		want.Seq = base + int64(i) + 1
		if !msgEqual(m, want) {
			t.Fatalf("update %d: subscriber got %+v, want %+v", i, m, want)
		}
	}
	took := time.Since(start)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	return took
}

func msgEqual(a, b kvmsg.Msg) bool {
	return a.Seq == b.Seq && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.UUID, b.UUID) &&
		bytes.Equal(a.Props, b.Props) && bytes.Equal(a.Body, b.Body)
}

// TestMisbehavingHandlers (issue 9, behaviour 1): a handler that blocks,
// one that panics on every batch, one that calls everything it can reach
// on its batches and one that overwrites them run beside a recording
// handler. Subscribers still receive every update, unchanged, at the rate
// of a server without handlers (within a generous factor); the snapshot
// holds the data as sent; the recording handler sees every update as sent,
// with no drops; the blocked handler is reported falling behind and the
// panicking one panicking, in the log and in Handlers().
func TestMisbehavingHandlers(t *testing.T) {
	n := 20000
	if raceEnabled {
		n = 10000
	}
	plain := startServer(t, Config{Heartbeat: -1, PubHWM: 1 << 20})
	plainTook := publishLoad(t, plain, n)

	logs := newLogRecorder()
	blocker := &blockingHandler{release: make(chan struct{})}
	rec := &recordingHandler{}
	srv := startServer(t, Config{
		Heartbeat: -1, PubHWM: 1 << 20, Logger: slog.New(logs),
		Handlers: []Handler{
			{Name: "blocker", Handler: blocker, Queue: 4},
			{Name: "panicker", Handler: panickingHandler{}},
			{Name: "prober", Handler: probingHandler{}},
			{Name: "mutator", Handler: mutatingHandler{}},
			{Name: "recorder", Handler: rec, Queue: 1 << 16},
		},
	})
	// Runs before the server's stop (cleanups run last-in first-out), so the
	// graceful stop does not wait on it.
	t.Cleanup(func() { close(blocker.release) })
	took := publishLoad(t, srv, n)
	t.Logf("%d updates to a subscriber: %v without handlers, %v with the misbehaving ones (%.0f vs %.0f updates/s)",
		n, plainTook.Round(time.Millisecond), took.Round(time.Millisecond),
		float64(n)/plainTook.Seconds(), float64(n)/took.Seconds())
	if took > 5*plainTook+2*time.Second {
		t.Errorf("publishing with misbehaving handlers took %v, without handlers %v", took, plainTook)
	}

	// The map is as sent.
	snap, _ := testkit.SnapshotMap(t, newPeer(t, srv.Port()).dealer(), "/h/", 10*time.Second)
	for k := n - 500; k < n; k++ {
		want := handlerLoad(k)
		if got := snap[string(want.Key)]; got != string(want.Body) {
			t.Fatalf("snapshot %s = %q, want %q", want.Key, got, want.Body)
		}
	}

	// The recording handler saw every update (ping included) as sent.
	total := srv.Stats().Sequence.Load()
	waitFor(t, 20*time.Second, "the recorder to see every update", func() bool {
		ups, _ := rec.snapshot()
		return int64(len(ups)) == total
	})
	ups, dropped := rec.snapshot()
	if dropped != 0 {
		t.Errorf("recorder was told %d updates were dropped", dropped)
	}
	for i := range n {
		want := handlerLoad(i)
		want.Seq = total - int64(n) + int64(i) + 1
		if got := ups[len(ups)-n+i]; !msgEqual(got, want) {
			t.Fatalf("recorder's update %d = %+v, want %+v", i, got, want)
		}
	}

	status := map[string]actors.HandlerStatus{}
	for _, h := range srv.Handlers() {
		status[h.Name] = h
	}
	waitFor(t, 20*time.Second, "the fast handlers to finish every update", func() bool {
		for _, h := range srv.Handlers() {
			status[h.Name] = h
		}
		for _, name := range []string{"panicker", "prober", "mutator", "recorder"} {
			if h := status[name]; h.Handled+h.Dropped != total {
				return false
			}
		}
		return true
	})
	b := status["blocker"]
	if b.Dropped == 0 || b.Queued > 4 || b.QueueCap != 4 || b.Lag <= 0 || b.Busy <= 0 || b.Handled != 0 {
		t.Errorf("blocker status %+v: want drops, at most 4 queued, lag, busy, nothing handled", b)
	}
	if pk := status["panicker"]; pk.Panics == 0 || pk.Handled == 0 {
		t.Errorf("panicker status %+v: want panics counted", pk)
	}
	for _, name := range []string{"prober", "mutator", "recorder"} {
		if h := status[name]; h.Panics != 0 || h.Lag != 0 {
			t.Errorf("%s status %+v: want no panics, no lag", name, h)
		}
	}
	if status["recorder"].Dropped != 0 {
		t.Errorf("recorder dropped %d updates", status["recorder"].Dropped)
	}
	if len(logs.find("falling behind", "handler", "blocker")) == 0 {
		t.Error("no log line says the blocker is falling behind")
	}
	if rs := logs.find("panicked", "handler", "panicker"); len(rs) == 0 || rs[0].level != slog.LevelError || rs[0].attrs["stack"] == "" {
		t.Errorf("panics logged as %+v, want an error line with the stack", rs)
	}
	for _, name := range []string{"prober", "mutator", "recorder"} {
		if rs := logs.find("handler", "handler", name); len(rs) != 0 {
			t.Errorf("%s was reported: %+v", name, rs)
		}
	}
}
