package client

import (
	"fmt"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/server"
)

// recorder is a client that follows a server directly and keeps every
// change it sees, in order: the reference for what a resumed client must
// be told.
type recorder struct {
	c      *Client
	events <-chan Event
	seen   []change
}

func newRecorder(t testing.TB, endpoint string) *recorder {
	t.Helper()
	c := dialWithin(t, Options{Endpoints: []string{endpoint}, HeartbeatTimeout: 5 * time.Second, JoinTimeout: 20 * time.Second, EventBuffer: 1 << 17}, 60*time.Second)
	return &recorder{c: c, events: c.Watch(t.Context())}
}

// until reads the recorder's events until it has seen the change at seq
// (the recorder follows everything, so every sequence is a change), and
// returns the changes after `after` up to seq.
func (r *recorder) until(t testing.TB, after, seq int64) []change {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for len(r.seen) == 0 || r.seen[len(r.seen)-1].seq < seq {
		select {
		case ev := <-r.events:
			switch ev.Type {
			case EventUpdate:
				r.seen = append(r.seen, change{ev.Key, string(ev.Value), ev.Seq})
			case EventDelete:
				r.seen = append(r.seen, change{ev.Key, "", ev.Seq})
			case EventResyncStarted, EventLost:
				t.Fatalf("the recorder itself lost its stream: %+v", ev)
			}
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("recorder at %d, want %d", r.c.Seq(), seq)
		}
	}
	var out []change
	for _, ch := range r.seen {
		if ch.seq > after && ch.seq <= seq {
			out = append(out, ch)
		}
	}
	return out
}

// writeMissed sends n updates to the server at port (sets of existing and
// new keys, some keys twice, every seventh a delete).
func writeMissed(t testing.TB, push *zmq.Socket, n, keys int) {
	t.Helper()
	for i := range n {
		value := fmt.Sprintf("m%d", i)
		if i%7 == 3 {
			value = ""
		}
		set(t, push, fmt.Sprintf("/r/%06d", (i*7919)%(keys+keys/10)), value)
	}
}

// fillServer stores keys /r/000000.. and waits until they are sequenced.
func fillServer(t testing.TB, srv *testServer, push *zmq.Socket, keys int) {
	t.Helper()
	for i := range keys {
		set(t, push, fmt.Sprintf("/r/%06d", i), "value-of-twenty-b")
	}
	waitFor(t, 60*time.Second, fmt.Sprintf("%d keys stored", keys), func() bool { return srv.Stats().Sequence.Load() >= int64(keys) })
}

// TestResumeAfterOutageServer is issue 14 behaviour 1 against clonekv's
// server: a client of a 100,000-key map loses its connection (a TCP proxy
// cut) for 2s while 1,000 updates happen; on reconnect it receives those
// 1,000 (not 100,000), its map equals the server's, and its watcher gets
// exactly the missed changes in order, each once.
func TestResumeAfterOutageServer(t *testing.T) {
	t.Parallel()
	const keys, updates = 100_000, 1_000
	srv := startServer(t, server.Config{})
	push := newRawPeer(t).pusher(srv.Port())
	fillServer(t, srv, push, keys)
	ref := newRecorder(t, srv.endpoint())
	px := startProxy(t, srv.Port())
	c := dialWithin(t, Options{Endpoints: []string{px.endpoint()}, HeartbeatTimeout: 2 * time.Second, JoinTimeout: 20 * time.Second, EventBuffer: 4096}, 60*time.Second)
	events := c.Watch(t.Context())
	assertMatchesWithin(t, c, srv.Port(), "", 60*time.Second)
	from := c.Seq()

	px.cut()
	cutAt := time.Now()
	waitFor(t, 15*time.Second, "the client to notice the outage", func() bool { return !c.Synced() })
	writeMissed(t, push, updates, keys)
	to := from + updates
	waitFor(t, 20*time.Second, "the updates sequenced", func() bool { return srv.Stats().Sequence.Load() >= to })
	want := ref.until(t, from, to)
	time.Sleep(time.Until(cutAt.Add(2 * time.Second))) // the outage lasts 2s
	px.restore()

	checkDelta(t, rejoinEvents(t, events, 30*time.Second), want)
	assertMatchesWithin(t, c, srv.Port(), "", 60*time.Second)
	st := c.Stats()
	if st.LastJoin.Kind != joinDelta || st.LastJoin.Messages != updates+1 || st.Resumes != 1 || st.FullResyncs != 0 {
		t.Fatalf("want one resume of %d messages: %+v", updates+1, st)
	}
	if n := srv.Stats().Resumes.Get("delta"); n != 1 {
		t.Fatalf("server counted %d delta resumes, want 1", n)
	}
	t.Logf("resumed %d updates in %d bytes, %v after reconnecting began", updates, st.LastJoin.Bytes, st.LastJoin.Took.Round(time.Millisecond))
}

// TestResumeAcrossDurableRestart is issue 14 behaviour 2 (one node): a
// clonesrv process with a data directory is killed and started again
// while a client is cut off and 200 updates were made; the client resumes
// (the window survives the restart), not a whole snapshot.
func TestResumeAcrossDurableRestart(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t, "github.com/clonekv/clonekv/cmd/clonesrv")
	port, dir := testkit.FreePorts(t), t.TempDir()
	first := startProcDir(t, bin, port, dir)
	px := startProxy(t, port)
	c := dial(t, Options{Endpoints: []string{px.endpoint()}, HeartbeatTimeout: 500 * time.Millisecond, JoinTimeout: 5 * time.Second})
	events := c.Watch(t.Context())
	push := newRawPeer(t).pusher(port)
	setEach(t, push, 500, "/r/%06d", "before")
	waitSeq(t, port, 500)
	assertMatches(t, c, port, "")

	px.cut()
	waitFor(t, 15*time.Second, "the client to notice the outage", func() bool { return !c.Synced() })
	writeMissed(t, push, 200, 500)
	waitSeq(t, port, 700)
	want, _ := snapshotOf(t, port, "")
	first.kill(t)
	startProcDir(t, bin, port, dir)
	waitSeq(t, port, 700)
	px.restore()

	got := rejoinEvents(t, events, 20*time.Second)
	if got[0].Type != EventResumed || len(got) != 202 {
		t.Fatalf("after the restart: %s; want resumed, 200 changes, resync-done", eventSummary(got))
	}
	assertMatches(t, c, port, "")
	if m := c.Snapshot().Map(); len(m) != len(want) {
		t.Fatalf("%d keys, want %d", len(m), len(want))
	}
	if st := c.Stats(); st.Resumes != 1 || st.FullResyncs != 0 || st.LastJoin.Messages != 201 {
		t.Fatalf("want one resume of 200 updates: %+v", st)
	}
}
