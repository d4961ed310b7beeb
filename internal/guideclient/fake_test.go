package guideclient_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/guideclient"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// fakeServer is a scripted server whose sockets the test goroutine owns: an
// XPUB (so the test sees the client's subscriptions) instead of a PUB.
type fakeServer struct {
	port               int
	zctx               *zmq.Context
	router, xpub, pull *zmq.Socket
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{zctx: zctx}
	for attempt := 0; ; attempt++ {
		port := 20000 + rand.IntN(12000)
		var socks []*zmq.Socket
		var bindErr error
		for i, typ := range []zmq.Type{zmq.ROUTER, zmq.XPUB, zmq.PULL} {
			s, err := zctx.NewSocket(typ)
			if err != nil {
				t.Fatal(err)
			}
			_ = s.SetLinger(transport.MinLinger)
			socks = append(socks, s)
			if bindErr = s.Bind(fmt.Sprintf("tcp://127.0.0.1:%d", port+i)); bindErr != nil {
				break
			}
		}
		if bindErr == nil {
			f.port, f.router, f.xpub, f.pull = port, socks[0], socks[1], socks[2]
			break
		}
		for _, s := range socks {
			_ = s.Close()
		}
		if attempt == 20 {
			t.Fatalf("no free ports: %v", bindErr)
		}
	}
	t.Cleanup(func() {
		for _, s := range []*zmq.Socket{f.router, f.xpub, f.pull} {
			_ = s.Close()
		}
		_ = f.zctx.Term()
	})
	return f
}

// recv waits up to 3 s for one message on s.
func recv(t *testing.T, s *zmq.Socket, what string) [][]byte {
	t.Helper()
	p := zmq.NewPoller()
	p.Add(s, zmq.POLLIN)
	polled, err := p.Poll(3 * time.Second)
	if err != nil || len(polled) == 0 {
		t.Fatalf("waiting for %s: timeout (%v)", what, err)
	}
	frames, err := s.RecvMessageBytes(0)
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

func msg(key string, seq int64, body string) [][]byte {
	return kvmsg.Msg{Key: []byte(key), Seq: seq, Body: []byte(body)}.Frames()
}

// TestAgainstScriptedServer checks the client's wire behaviour step by step.
func TestAgainstScriptedServer(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type outcome struct {
		res *guideclient.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := guideclient.Run(ctx, guideclient.Config{
			Port: f.port, Interval: 20 * time.Millisecond, Rand: rand.New(rand.NewPCG(1, 2)),
		})
		done <- outcome{res, err}
	}()

	// The SUB subscribes to the subtree only.
	if sub := recv(t, f.xpub, "subscription"); len(sub) != 1 || string(sub[0]) != "\x01/client/" {
		t.Fatalf("subscription = %q, want \\x01/client/", sub)
	}
	req := recv(t, f.router, "snapshot request")
	if len(req) != 3 || string(req[1]) != "ICANHAZ?" || string(req[2]) != "/client/" {
		t.Fatalf("request = %q, want [id ICANHAZ? /client/]", req)
	}
	id := req[0]
	for _, m := range [][][]byte{
		msg("/client/a", 3, "1"),
		msg("/client/b", 5, "2"),
		msg(kvmsg.KeySnapshotEnd, 5, "/client/"),
	} {
		if _, err := f.router.SendMessage(id, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range [][][]byte{
		msg("/client/a", 4, "stale"), // not newer than the snapshot
		msg("/client/c", 6, "3"),
		msg("/client/b", 7, ""),        // delete
		msg("/client/c", 6, "dup"),     // repeat
		msg(kvmsg.KeyHeartbeat, 0, ""), // not subscribed
		msg("/client/d", 8, "4"),
	} {
		if _, err := f.xpub.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}

	// KVSETs: key subtree+randof(10000), decimal body, ttl=randof(30).
	for i := range 5 {
		m, err := kvmsg.Decode(recv(t, f.pull, "KVSET"), kvmsg.Limits{})
		if err != nil {
			t.Fatalf("KVSET %d: %v", i, err)
		}
		n, kerr := strconv.Atoi(strings.TrimPrefix(string(m.Key), "/client/"))
		body, berr := strconv.Atoi(string(m.Body))
		ttl, terr := m.TTL()
		if !strings.HasPrefix(string(m.Key), "/client/") || kerr != nil || n < 0 || n >= 10000 ||
			berr != nil || body < 0 || body >= 1000000 || terr != nil || ttl >= 30*time.Second ||
			m.Seq != 0 || len(m.UUID) != 0 || !strings.HasPrefix(string(m.Props), "ttl=") {
			t.Errorf("KVSET %d = %+v, not the Guide's random update", i, m)
		}
	}
	cancel()
	out := <-done
	if out.err != nil {
		t.Fatalf("Run: %v", out.err)
	}
	res := out.res
	want := map[string]string{"/client/a": "1", "/client/c": "3", "/client/d": "4"}
	if !maps.Equal(res.Map, want) || res.Sequence != 8 || res.Snapshot != 2 ||
		res.Received != 3 || res.Discarded != 2 || res.Sent < 5 || res.Joined != 5 || res.Gaps != 0 {
		t.Errorf("result = %+v, want map %v at 8, 2 in snapshot, 3 received, 2 discarded, ≥5 sent", res, want)
	}
}

func TestSnapshotTimeout(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t) // never answers
	t0 := time.Now()
	_, _, err := guideclient.Snapshot(context.Background(), "tcp://127.0.0.1", f.port, "", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("err = %v, want a deadline error", err)
	}
	if d := time.Since(t0); d > 1500*time.Millisecond {
		t.Errorf("Snapshot took %v with a 300ms timeout", d)
	}
}
