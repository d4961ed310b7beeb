package guideclient_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/guideclient"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// sixPeer is the minimal emulation, over real sockets, of what the Guide's
// Model Six peers do with what a server sends them (clone.c's agent and
// clonesrv6's backup subscriber): SUB to P+1 before ICANHAZ? on a DEALER to
// P, store each KVSYNC until KTHXBAI with its properties as received, then
// apply each published message whose sequence is above its own (so HUGZ,
// sequence 0, is ignored) and treat an empty body as a delete. All its
// sockets are used by the test goroutine only.
type sixPeer struct {
	zctx   *zmq.Context
	dealer *zmq.Socket
	sub    *zmq.Socket
	pub    *zmq.Socket // the client's updates, to a SUB collector at P+2; nil for a backup
	seq    int64
	kv     map[string]kvmsg.Msg // key → message as received, properties untouched
	last   map[string]kvmsg.Msg // key → last message applied for it, deletes included
	seen   map[string]bool      // keys ever held
}

func newSixPeer(t *testing.T, port int, withPub bool) *sixPeer {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	p := &sixPeer{zctx: zctx, kv: map[string]kvmsg.Msg{}, last: map[string]kvmsg.Msg{}, seen: map[string]bool{}}
	t.Cleanup(func() {
		for _, s := range []*zmq.Socket{p.dealer, p.sub, p.pub} {
			if s != nil {
				s.Close()
			}
		}
		zctx.Term()
	})
	open := func(typ zmq.Type, port int) *zmq.Socket {
		s, err := zctx.NewSocket(typ)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetLinger(transport.MinLinger); err != nil {
			t.Fatal(err)
		}
		if typ == zmq.SUB {
			if err := s.SetSubscribe(""); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Connect(fmt.Sprintf("tcp://127.0.0.1:%d", port)); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The Model Six order: subscriber first, then the snapshot.
	p.sub = open(zmq.SUB, port+1)
	p.dealer = open(zmq.DEALER, port)
	if withPub {
		p.pub = open(zmq.PUB, port+2)
	}
	if _, err := p.dealer.SendMessage(kvmsg.CmdSnapshot, ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("no KTHXBAI within 20s")
		}
		m, ok := recvMsg(t, p.dealer, 100*time.Millisecond)
		if !ok {
			continue
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			p.seq = m.Seq
			return p
		}
		p.store(m)
	}
}

// recvMsg waits at most d for one message on s and decodes it.
func recvMsg(t *testing.T, s *zmq.Socket, d time.Duration) (kvmsg.Msg, bool) {
	t.Helper()
	poller := zmq.NewPoller()
	poller.Add(s, zmq.POLLIN)
	polled, err := poller.Poll(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(polled) == 0 {
		return kvmsg.Msg{}, false
	}
	frames, err := s.RecvMessageBytes(0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := kvmsg.Decode(frames, kvmsg.Limits{})
	if err != nil {
		t.Fatalf("undecodable message from clonekv: %v", err)
	}
	return m, true
}

func (p *sixPeer) store(m kvmsg.Msg) {
	k := string(m.Key)
	p.last[k] = m
	if m.IsDelete() {
		delete(p.kv, k)
		return
	}
	p.kv[k] = m
	p.seen[k] = true
}

// poll applies the published messages that arrive within d.
func (p *sixPeer) poll(t *testing.T, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for wait := d; wait > 0; wait = time.Until(end) {
		m, ok := recvMsg(t, p.sub, wait)
		if !ok {
			return
		}
		if m.Seq > p.seq { // HUGZ (sequence 0) and anything older are ignored
			p.seq = m.Seq
			p.store(m)
		}
	}
}

// send publishes a KVSET as clone.c's agent does: key, sequence 0, a UUID,
// the ttl property if any, the body.
func (p *sixPeer) send(t *testing.T, key, body string, ttl int) {
	t.Helper()
	m := kvmsg.Msg{Key: []byte(key), Body: []byte(body), UUID: []byte("0123456789abcdef")}
	if ttl > 0 {
		m.Props = kvmsg.SetProp(nil, kvmsg.PropTTL, strconv.Itoa(ttl))
	}
	if _, err := p.pub.SendMessage(m.Frames()); err != nil {
		t.Fatal(err)
	}
}

// bodies is the key → body view of the peer's map.
func (p *sixPeer) bodies() map[string]string {
	out := make(map[string]string, len(p.kv))
	for k, m := range p.kv {
		out[k] = string(m.Body)
	}
	return out
}

// until polls the peer until cond holds, failing the test after d.
func (p *sixPeer) until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; peer holds %v", d, what, p.bodies())
		}
		p.poll(t, 100*time.Millisecond)
	}
}

// TestModelSixClientAgainstClonekv is issue 10: a Guide Model Six client
// (SUB collector, PUB updates) against clonekv with ttl keys, a delete and an
// expiry: its map converges to clonekv's, the expired key disappears from it
// (by a delete with no properties), and a Model Six client joining later
// stores the KVSYNCs with clonekv's relative ttl as sent and converges too.
func TestModelSixClientAgainstClonekv(t *testing.T) {
	t.Parallel()
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Collector: server.CollectorSub,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, srv, 5*time.Second)
	port := srv.Port()

	c := newSixPeer(t, port, true)
	// PUB → SUB drops what is sent before the connection is up: send a
	// warm-up key until it comes back, as a bounded loop.
	for i := 0; ; i++ {
		if i == 200 {
			t.Fatal("warm-up update never came back in 200 tries")
		}
		c.send(t, "/six/hello", "hi", 0)
		c.poll(t, 100*time.Millisecond)
		if c.seen["/six/hello"] {
			break
		}
	}
	c.send(t, "/six/short", "s", 1)
	c.send(t, "/six/long", "l", 30)
	c.send(t, "/six/keep", "k", 0)
	c.send(t, "/six/hello", "", 0) // a delete
	c.until(t, 30*time.Second, "short seen then expired, long and keep held, hello deleted", func() bool {
		_, short := c.kv["/six/short"]
		_, long := c.kv["/six/long"]
		_, keep := c.kv["/six/keep"]
		_, hello := c.kv["/six/hello"]
		return c.seen["/six/short"] && !short && long && keep && !hello
	})
	if exp := c.last["/six/short"]; len(exp.Props) != 0 {
		t.Errorf("expiry delete of /six/short carries properties %q, want none", exp.Props)
	}
	if _, ok := c.kv[kvmsg.KeyHeartbeat]; ok {
		t.Error("HUGZ stored as a key: want it ignored by its sequence")
	}
	if n := srv.Stats().Expirations.Load(); n < 1 {
		t.Errorf("server expirations %d, want ≥ 1", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want, seq, err := guideclient.Snapshot(ctx, "tcp://127.0.0.1", port, "", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.until(t, 20*time.Second, "the client at the snapshot's sequence", func() bool { return c.seq >= seq })
	if got := c.bodies(); !maps.Equal(got, want) {
		t.Errorf("Model Six client map %v, clonekv snapshot %v", got, want)
	}

	late := newSixPeer(t, port, false)
	if got := late.bodies(); !maps.Equal(got, want) {
		t.Errorf("late Model Six client's snapshot %v, want %v", got, want)
	}
	if v, _ := late.kv["/six/long"].Prop(kvmsg.PropTTL); v != "30" {
		t.Errorf("KVSYNC /six/long ttl %q, want clonekv's relative %q as sent", v, "30")
	}
}

// sixBackupFlushTTL is clonesrv6's flush_ttl on the backup's stored map
// (clonesrv6.c s_flush_single, as clonesrv5.c's): a stored message's ttl
// property is read as an absolute expiry in Unix milliseconds
// (zclock_time), and a message with a nonzero ttl at or before now is
// removed. It returns the keys removed.
func sixBackupFlushTTL(kv map[string]kvmsg.Msg, now time.Time) []string {
	var gone []string
	for k, m := range kv {
		v, _ := m.Prop(kvmsg.PropTTL)
		ttl, _ := strconv.ParseInt(v, 10, 64) // sscanf: no ttl reads as 0
		if ttl != 0 && now.UnixMilli() >= ttl {
			gone = append(gone, k)
			delete(kv, k)
		}
	}
	return gone
}

// TestModelSixBackupFedByClonekv is issue 10: a Guide Model Six backup fed by
// a clonekv primary (snapshot at start, then the primary's PUB) stores
// clonekv's relative ttl=30 as sent, and its first ttl flush, reading that as
// an absolute time (30 ms after 1970), removes every key with a ttl that
// clonekv still holds. This is why a clonekv primary with a Guide backup is
// unsupported (README, "Compatibility with the Guide"). It fails if clonekv's
// properties on KVSYNC or KVPUB change.
func TestModelSixBackupFedByClonekv(t *testing.T) {
	t.Parallel()
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Collector: server.CollectorSub,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, srv, 5*time.Second)
	port := srv.Port()

	// A writer (a Model Six client) puts two keys before the backup starts,
	// so that the backup gets them in its snapshot.
	w := newSixPeer(t, port, true)
	for i := 0; !w.seen["/b/plain"]; i++ {
		if i == 200 {
			t.Fatal("writer's update never came back in 200 tries")
		}
		w.send(t, "/b/plain", "p", 0)
		w.poll(t, 100*time.Millisecond)
	}
	w.send(t, "/b/sync", "s", 30)
	w.until(t, 20*time.Second, "/b/sync published", func() bool { return w.seen["/b/sync"] })

	b := newSixPeer(t, port, false)
	if !b.seen["/b/sync"] || !b.seen["/b/plain"] {
		t.Fatalf("backup's snapshot %v: want /b/sync and /b/plain", b.bodies())
	}
	// A key the backup gets from the primary's PUB; the SUB may still be
	// joining, so resend (bounded) until the backup has it.
	for i := 0; !b.seen["/b/pub"]; i++ {
		if i == 200 {
			t.Fatal("backup never received /b/pub in 200 tries")
		}
		w.send(t, "/b/pub", "u"+strconv.Itoa(i), 30)
		b.poll(t, 100*time.Millisecond)
	}
	for _, k := range []string{"/b/sync", "/b/pub"} {
		if v, _ := b.kv[k].Prop(kvmsg.PropTTL); v != "30" {
			t.Errorf("backup stored %s with ttl %q, want clonekv's relative %q", k, v, "30")
		}
	}

	gone := sixBackupFlushTTL(b.kv, time.Now())
	if _, ok := b.kv["/b/sync"]; ok {
		t.Error("backup's first flush kept /b/sync (ttl=30 from clonekv): want it expired")
	}
	if _, ok := b.kv["/b/pub"]; ok {
		t.Error("backup's first flush kept /b/pub (ttl=30 from clonekv): want it expired")
	}
	if _, ok := b.kv["/b/plain"]; !ok {
		t.Error("backup's flush removed /b/plain, which has no ttl")
	}
	t.Logf("backup's first flush removed %v", gone)

	// clonekv itself still holds them: the backup would diverge at takeover.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	primary, _, err := guideclient.Snapshot(ctx, "tcp://127.0.0.1", port, "/b/", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/b/sync", "/b/pub", "/b/plain"} {
		if _, ok := primary[k]; !ok {
			t.Errorf("clonekv primary lost %s; want it held (ttl 30 s)", k)
		}
	}
}
