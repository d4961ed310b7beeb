package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http/httputil"
	"strings"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/gateway"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// expectUpdates reads put events of the writer's keys in order: each id is
// the stream's tag and the event's sequence, values follow the writer.
func expectUpdates(t testing.TB, st *stream, tag string, from, n int) int64 {
	t.Helper()
	var last int64
	for i := from; i < from+n; i++ {
		ev := st.next(t, 30*time.Second)
		d := ev.decode(t)
		wantKey, wantVal := fmt.Sprintf("/w/k%03d", i%500), fmt.Sprintf("v%d", i)
		if ev.name != "put" || d.Key != wantKey || d.Value != wantVal {
			t.Fatalf("update %d: %s %+v, want put %s=%s", i, ev.name, d, wantKey, wantVal)
		}
		if d.Seq <= last || ev.id != fmt.Sprintf("%s:%d", tag, d.Seq) {
			t.Fatalf("update %d: seq %d after %d, id %q (stream %q)", i, d.Seq, last, ev.id, tag)
		}
		last = d.Seq
	}
	return last
}

func tagOf(t testing.TB, synced sseEvent) string {
	t.Helper()
	tag, _, ok := strings.Cut(synced.id, ":")
	if !ok || tag == "" {
		t.Fatalf("synced id %q: want TAG:SEQ", synced.id)
	}
	return tag
}

func TestWatchEveryUpdateInOrderAt10kPerSecond(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{gateway: func(c *gateway.Config) { c.WatchQueue = 1 << 16 }})
	r.put(t, "/w/before", "x")
	r.put(t, "/elsewhere", "y")
	st := r.watch(t, "?prefix=/w/", "")
	snap, synced := st.untilSynced(t)
	if len(snap) != 1 || snap["/w/before"] != "x" {
		t.Fatalf("snapshot %v", snap)
	}
	tag := tagOf(t, synced)
	const n = 10000
	began := time.Now()
	go streamFrom(t, r.srv.Port(), 0, n)
	last := expectUpdates(t, st, tag, 0, n)
	t.Logf("%d updates written and watched in %v", n, time.Since(began))
	ev := st.next(t, 30*time.Second)
	if d := ev.decode(t); d.Key != "/w/end" || d.Seq != last+1 {
		t.Fatalf("after the stream: %s %+v, want /w/end at %d", ev.name, d, last+1)
	}
	if s := r.gw.Stats(); s.Cuts != 0 || s.Resets != 1 {
		t.Fatalf("gateway stats %+v: want no cut and the first reset only", s)
	}
}

func TestWatchResumeWithLastEventID(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{gateway: func(c *gateway.Config) { c.Heartbeat = 200 * time.Millisecond }})
	for i := range 5 {
		r.put(t, fmt.Sprintf("/r/k%d", i), "old")
	}
	st := r.watch(t, "?prefix=/r/", "")
	snap, synced := st.untilSynced(t)
	if len(snap) != 5 {
		t.Fatalf("snapshot %v", snap)
	}
	// Heartbeats are comments.
	select {
	case c := <-st.comments:
		if c != ": heartbeat" {
			t.Fatalf("comment %q", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no heartbeat")
	}
	r.put(t, "/r/k0", "seen")
	ev := st.next(t, 20*time.Second)
	if d := ev.decode(t); ev.name != "put" || d.Value != "seen" {
		t.Fatalf("event %+v", ev)
	}
	lastID := ev.id
	st.close()
	testkit.WaitFor(t, 20*time.Second, 5*time.Millisecond, "the watcher to go", func() bool { return r.gw.Stats().Watchers == 0 })

	// Missed while disconnected: two puts and a delete under the prefix,
	// and updates elsewhere that must not be replayed.
	want := []struct{ name, key, value string }{{"put", "/r/k1", "new1"}, {"delete", "/r/k2", ""}, {"put", "/r/k9", "new9"}}
	var seqs []int64
	for _, m := range want {
		r.put(t, "/other", "noise")
		if m.name == "delete" {
			var w gateway.Written
			if code, body := r.do(t, "DELETE", "/v1/kv"+m.key, "", nil, &w); code != 200 {
				t.Fatalf("DELETE: %d %s", code, body)
			}
			seqs = append(seqs, w.Seq)
			continue
		}
		seqs = append(seqs, r.put(t, m.key, m.value))
	}

	re := r.watch(t, "?prefix=/r/", lastID)
	tag := tagOf(t, synced)
	for i, m := range want {
		ev := re.next(t, 20*time.Second)
		d := ev.decode(t)
		if ev.name != m.name || d.Key != m.key || d.Value != m.value || d.Seq != seqs[i] || ev.id != fmt.Sprintf("%s:%d", tag, seqs[i]) {
			t.Fatalf("resumed event %d: %+v %+v, want %s %s=%q at %d", i, ev, d, m.name, m.key, m.value, seqs[i])
		}
	}
	ev = re.next(t, 20*time.Second)
	if d := ev.decode(t); ev.name != "synced" || !d.Resumed || d.Seq < seqs[2] {
		t.Fatalf("after the missed updates: %+v", ev)
	}
	// Live updates go on after the resume.
	s := r.put(t, "/r/live", "yes")
	if ev := re.next(t, 20*time.Second); ev.name != "put" || ev.decode(t).Seq != s {
		t.Fatalf("live after resume: %+v", ev)
	}

	// An id this stream never issued (another history, a restarted
	// server): a reset and a whole snapshot.
	for _, id := range []string{"g0000000000000000:3", tag + ":999999", "garbage"} {
		x := r.watch(t, "?prefix=/r/", id)
		first := x.next(t, 20*time.Second)
		if first.name != "reset" || !first.hasID || first.id != "" {
			t.Fatalf("Last-Event-ID %q: first event %+v, want a reset that clears the id", id, first)
		}
		snap, _ := x.untilSynced(t)
		if len(snap) != 6 || snap["/r/k1"] != "new1" || snap["/r/live"] != "yes" {
			t.Fatalf("Last-Event-ID %q: snapshot %v", id, snap)
		}
		x.close()
	}
}

// A watcher that stops reading is cut off once its queue is full, with a
// final event saying why; another watcher of the same updates receives
// every one of them, and the writer's updates are all published.
func TestWatchSlowReaderCutOff(t *testing.T) {
	t.Parallel()
	const queue = 16384
	r := newRig(t, rigOptions{gateway: func(c *gateway.Config) { c.WatchQueue = queue; c.StallTimeout = 30 * time.Second }})
	fast := r.watch(t, "?prefix=/w/", "")
	_, synced := fast.untilSynced(t)
	tag := tagOf(t, synced)

	// The slow reader: a raw connection with a small receive buffer that
	// reads the response head and then nothing.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(r.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/watch?prefix=/w/ HTTP/1.1\r\nHost: x\r\n\r\n")
	testkit.WaitFor(t, 20*time.Second, 5*time.Millisecond, "two watchers", func() bool { return r.gw.Stats().Watchers == 2 })

	const chunk = 10000
	written := 0
	for r.gw.Stats().Cuts == 0 {
		if written >= 20*chunk {
			t.Fatalf("the slow reader was not cut off after %d updates", written)
		}
		go streamFrom(t, r.srv.Port(), written, chunk)
		expectUpdates(t, fast, tag, written, chunk)
		if ev := fast.next(t, 20*time.Second); ev.decode(t).Key != "/w/end" {
			t.Fatalf("after chunk: %+v", ev)
		}
		written += chunk
	}
	// The slow reader now reads: what it had, in order, then the final
	// event, then the end of the stream.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp := readHead(t, br)
	if !strings.Contains(resp, "200 OK") {
		t.Fatalf("slow reader's answer: %q", resp)
	}
	evs := make(chan sseEvent, 1024)
	perr := make(chan error, 1)
	go func() { perr <- parseSSE(httputil.NewChunkedReader(br), evs, make(chan string, 64)) }()
	var closed *sseEvent
	var prev int64
	n := 0
	for ev := range evs {
		switch ev.name {
		case "put":
			d := ev.decode(t)
			if d.Seq <= prev {
				t.Fatalf("slow reader: seq %d after %d", d.Seq, prev)
			}
			prev = d.Seq
			n++
		case "closed":
			closed = &ev
		}
	}
	if err := <-perr; closed == nil || !strings.Contains(closed.decode(t).Reason, "slow reader") {
		t.Fatalf("slow reader: %d updates, then %v (read error %v): want a closed event naming the reason", n, closed, err)
	}
	if s := r.gw.Stats(); s.Cuts != 1 || s.Watchers != 1 || s.Client.Resyncs != 0 {
		t.Fatalf("gateway after the cut: %+v", s)
	}
	// The fast watcher goes on.
	s := r.put(t, "/w/after", "ok")
	if ev := fast.next(t, 20*time.Second); ev.decode(t).Seq != s {
		t.Fatalf("fast watcher after the cut: %+v", ev)
	}
}

// readHead reads an HTTP response head.
func readHead(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("response head: %v (so far %q)", err, b.String())
		}
		if line == "\r\n" {
			return b.String()
		}
		b.WriteString(line)
	}
}

// streamFrom writes n updates of the keys /w/k000../w/k499 on a raw
// ZeroMQ PUSH to the server's collector (a Model Five client), values
// numbered from from, paced at 10,000 a second, then /w/end. It runs in
// the caller's goroutine, which owns the socket.
func streamFrom(t testing.TB, port, from, n int) { streamAt(t, port, from, n, 10000) }

// streamAt is streamFrom at rate updates a second.
func streamAt(t testing.TB, port, from, n, rate int) {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Error(err)
		return
	}
	defer zctx.Term() // waits for the linger: every update reaches the server
	push, err := transport.Connect(zctx, zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", port+2), transport.Options{SndHWM: 100000, Linger: 20 * time.Second})
	if err != nil {
		t.Error(err)
		return
	}
	defer push.Close()
	start := time.Now()
	for i := 0; i < n; {
		due := min(n, int(time.Since(start)*time.Duration(rate)/time.Second)+1)
		for ; i < due; i++ {
			k := from + i
			m := kvmsg.Msg{Key: []byte(fmt.Sprintf("/w/k%03d", k%500)), Body: []byte(fmt.Sprintf("v%d", k))}
			if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
				t.Errorf("send %d: %v", k, err)
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	if err := transport.SendMessage(push, kvmsg.Msg{Key: []byte("/w/end"), Body: []byte("end")}.Frames(), 0); err != nil {
		t.Error(err)
	}
}
