package baseline_test

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/bench/baseline"
	"github.com/clonekv/clonekv/kvmsg"
)

func TestSnapshotSubtree(t *testing.T) {
	t.Parallel()
	srv := start(t)
	p := newPeer(t)
	push := p.connect(zmq.PUSH, srv.Port()+2)
	sub := p.connect(zmq.SUB, srv.Port()+1, "")
	dealer := p.connect(zmq.DEALER, srv.Port())
	seq := syncSub(t, push, sub)

	updates := []struct{ key, body, props string }{
		{"/a/1", "one", ""},
		{"/a/2", "two", "x=y\n"},
		{"/b/1", "other subtree", ""},
		{"/a", "prefix of the subtree, not in it", ""},
		{"/a/3", "deleted below", ""},
		{"/a/3", "", ""},
		{"/a/1", "one again", ""},
		{"/a/ttl", "expires in a minute", "ttl=60\n"},
	}
	before := time.Now().UnixMilli()
	for _, u := range updates {
		send(t, push, kvset(u.key, u.body, u.props)...)
	}
	for range updates {
		mustRecv(t, sub, "update") // published, hence stored
	}
	after := time.Now().UnixMilli()
	seq += int64(len(updates))

	got, end := snapshot(t, dealer, "/a/")
	if end.Seq != seq || string(end.Body) != "/a/" || len(end.UUID) != 0 || len(end.Props) != 0 {
		t.Errorf("KTHXBAI = seq %d uuid %x props %q body %q, want seq %d, empty, empty, %q",
			end.Seq, end.UUID, end.Props, end.Body, seq, "/a/")
	}
	want := map[string]struct {
		body string
		seq  int64
	}{
		"/a/1":   {"one again", seq - 1},
		"/a/2":   {"two", seq - 6},
		"/a/ttl": {"expires in a minute", seq},
	}
	if len(got) != len(want) {
		t.Errorf("snapshot has %d keys, want %d: %v", len(got), len(want), keys(got))
	}
	for k, w := range want {
		m, ok := got[k]
		if !ok {
			t.Errorf("snapshot lacks %q", k)
			continue
		}
		if string(m.Body) != w.body || m.Seq != w.seq {
			t.Errorf("%q = %q seq %d, want %q seq %d", k, m.Body, m.Seq, w.body, w.seq)
		}
	}
	if v, _ := got["/a/2"].Prop("x"); v != "y" {
		t.Errorf("/a/2 lost its property: %q", got["/a/2"].Props)
	}
	// The seed stores (and so snapshots) the absolute expiry in Unix ms.
	abs, err := strconv.ParseInt(mustProp(t, got["/a/ttl"], "ttl"), 10, 64)
	if err != nil || abs < before+60_000 || abs > after+60_000 {
		t.Errorf("snapshot ttl = %q, want absolute ms in [%d, %d]", got["/a/ttl"].Props, before+60_000, after+60_000)
	}

	all, end := snapshot(t, dealer, "")
	// Everything: /probe/, /a/1, /a/2, /b/1, /a and /a/ttl.
	if len(all) != 6 || end.Seq != seq || string(end.Body) != "" {
		t.Errorf("full snapshot has %v at seq %d, want 6 keys at %d", keys(all), end.Seq, seq)
	}
	if st := srv.Stats(); st.Snapshots != 2 || st.Bad != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestUpdatesSequencedAndPublished(t *testing.T) {
	t.Parallel()
	srv := start(t)
	p := newPeer(t)
	push := p.connect(zmq.PUSH, srv.Port()+2)
	sub := p.connect(zmq.SUB, srv.Port()+1, "")
	router := p.connect(zmq.DEALER, srv.Port())
	seq := syncSub(t, push, sub)

	uuid := bytes.Repeat([]byte{0xab}, kvmsg.UUIDLen)
	in := kvmsg.Msg{Key: []byte("/k"), Seq: 999, UUID: uuid, Props: []byte("ttl=5\nz=1\n"), Body: []byte("v")}
	send(t, push, in.Frames()...)
	// Bad input is ignored and consumes no sequence.
	send(t, push, []byte("three"), []byte("frames"), []byte("only"))
	send(t, push, []byte("/k"), []byte("short"), nil, nil, []byte("v"))
	send(t, router, []byte("HELLO"), []byte("/"))
	send(t, router, []byte(kvmsg.CmdSnapshot))
	send(t, push, kvset("/k", "w", "")...)

	m := mustRecv(t, sub, "first update")
	if m.Seq != seq+1 || string(m.Key) != "/k" || !bytes.Equal(m.UUID, uuid) ||
		string(m.Props) != "ttl=5\nz=1\n" || string(m.Body) != "v" {
		t.Errorf("published %+v, want the update unchanged with seq %d", m, seq+1)
	}
	m = mustRecv(t, sub, "second update")
	if m.Seq != seq+2 || string(m.Body) != "w" {
		t.Errorf("published seq %d body %q, want seq %d body w", m.Seq, m.Body, seq+2)
	}
	_, end := snapshot(t, router, "/k")
	if end.Seq != seq+2 {
		t.Errorf("KTHXBAI seq %d, want %d", end.Seq, seq+2)
	}
	if st := srv.Stats(); st.Bad != 4 || st.Updates != seq+2 {
		t.Errorf("stats = %+v, want 4 bad and %d updates", st, seq+2)
	}
}

func TestTTLExpiryPublishesDelete(t *testing.T) {
	t.Parallel()
	srv := start(t)
	p := newPeer(t)
	push := p.connect(zmq.PUSH, srv.Port()+2)
	sub := p.connect(zmq.SUB, srv.Port()+1, "")
	dealer := p.connect(zmq.DEALER, srv.Port())
	seq := syncSub(t, push, sub)

	t0 := time.Now()
	send(t, push, kvset("/t/keep", "stays", "ttl=0\n")...)
	send(t, push, kvset("/t/gone", "goes", "ttl=1\n")...)
	for range 2 {
		mustRecv(t, sub, "update")
	}
	// The seed's scan runs once a second, so a 1 s key goes within 1-2 s.
	m := mustRecv(t, sub, "expiry delete")
	elapsed := time.Since(t0)
	if string(m.Key) != "/t/gone" || m.Seq != seq+3 || len(m.Body) != 0 {
		t.Errorf("got %q seq %d body %q, want /t/gone seq %d empty", m.Key, m.Seq, m.Body, seq+3)
	}
	if elapsed < 900*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("delete after %v, want 1-2 s", elapsed)
	}
	t.Logf("ttl=1 key deleted after %v", elapsed.Round(time.Millisecond))
	got, end := snapshot(t, dealer, "/t/")
	if len(got) != 1 || string(got["/t/keep"].Body) != "stays" || end.Seq != seq+3 {
		t.Errorf("snapshot after expiry = %v at seq %d, want only /t/keep at %d", keys(got), end.Seq, seq+3)
	}
	if st := srv.Stats(); st.Expired != 1 {
		t.Errorf("stats = %+v, want 1 expired", st)
	}
}

func TestRunStopsPromptly(t *testing.T) {
	t.Parallel()
	srv, err := baseline.New(baseline.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Port() < 1024 {
		t.Errorf("Port() = %d", srv.Port())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	time.Sleep(150 * time.Millisecond)
	t0 := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		if d := time.Since(t0); d > 300*time.Millisecond {
			t.Errorf("Run took %v to stop", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop")
	}
	if err := srv.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestBindErrorNamesEndpoint(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	_, err = baseline.New(baseline.Config{Port: busy - 1}) // P+1 is taken
	if err == nil {
		t.Fatal("New succeeded on a busy port")
	}
	// P+1 is ours to occupy; P (busy-1) may be taken by some other process
	// too, so the error may name either, but it must name the endpoint.
	p, p1 := "tcp://127.0.0.1:"+strconv.Itoa(busy-1)+":", "tcp://127.0.0.1:"+strconv.Itoa(busy)+":"
	if msg := err.Error() + ":"; !strings.Contains(msg, p) && !strings.Contains(msg, p1) {
		t.Errorf("error %q names neither %s nor %s", err, p[:len(p)-1], p1[:len(p1)-1])
	}
}

func keys(m map[string]kvmsg.Msg) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func mustProp(t *testing.T, m kvmsg.Msg, name string) string {
	t.Helper()
	v, ok := m.Prop(name)
	if !ok {
		t.Errorf("%q has no %s property: %q", m.Key, name, m.Props)
	}
	return v
}
