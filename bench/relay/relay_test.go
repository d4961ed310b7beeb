package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/bench/relay"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// TestRelayInOrder pushes N messages (and one malformed) and checks that a
// subscriber gets all N in order, unchanged except for sequences 1..N.
func TestRelayInOrder(t *testing.T) {
	const n = 1000
	// A SUB's subscription reaches the PUB asynchronously; if the first
	// messages were published before it arrived, retry with a fresh relay.
	for attempt := 1; ; attempt++ {
		late, ok := runRelay(t, n)
		if ok || !late || attempt == 3 {
			if late {
				t.Fatalf("subscriber joined late in %d attempts", attempt)
			}
			return
		}
		t.Logf("attempt %d: subscriber joined late, retrying", attempt)
	}
}

// runRelay runs one relay; late reports that the subscriber missed the
// start of the stream (and nothing else went wrong).
func runRelay(t *testing.T, n int) (late, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := relay.New(relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	sub := mustSocket(t, zctx, zmq.SUB, r.Port()+1)
	defer sub.Close()
	if err := sub.SetSubscribe(""); err != nil {
		t.Fatal(err)
	}
	push := mustSocket(t, zctx, zmq.PUSH, r.Port()+2)
	defer push.Close()
	time.Sleep(200 * time.Millisecond) // let the subscription reach the PUB

	uuid := bytes.Repeat([]byte{7}, kvmsg.UUIDLen)
	for i := range n {
		m := kvmsg.Msg{Key: []byte("/r/" + strconv.Itoa(i)), Seq: -1, UUID: uuid, Props: []byte("i=" + strconv.Itoa(i) + "\n"), Body: []byte("body")}
		if i == n/2 {
			if _, err := push.SendMessage("not", "five", "frames"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := push.SendMessage(m.Frames()); err != nil {
			t.Fatal(err)
		}
	}
	poller := zmq.NewPoller()
	poller.Add(sub, zmq.POLLIN)
	for i := 0; i < n; i++ {
		polled, err := poller.Poll(time.Until(deadline(ctx)))
		if err != nil || len(polled) == 0 {
			t.Fatalf("after %d messages: timeout (err %v); relay forwarded %d", i, err, r.Forwarded())
		}
		frames, err := sub.RecvMessageBytes(0)
		if err != nil {
			t.Fatal(err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if i == 0 && m.Seq != 1 {
			return true, false
		}
		want := kvmsg.Msg{Key: []byte("/r/" + strconv.Itoa(i)), Seq: int64(i + 1), UUID: uuid, Props: []byte("i=" + strconv.Itoa(i) + "\n"), Body: []byte("body")}
		if fmt.Sprint(m) != fmt.Sprint(want) {
			t.Fatalf("message %d = %+v, want %+v", i, m, want)
		}
	}
	if r.Dropped() != 1 || r.Forwarded() != int64(n) {
		t.Errorf("dropped %d forwarded %d, want 1 and %d", r.Dropped(), r.Forwarded(), n)
	}
	return false, true
}

func mustSocket(t *testing.T, zctx *zmq.Context, typ zmq.Type, port int) *zmq.Socket {
	t.Helper()
	s, err := zctx.NewSocket(typ)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetLinger(transport.MinLinger); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(fmt.Sprintf("tcp://127.0.0.1:%d", port)); err != nil {
		t.Fatal(err)
	}
	return s
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}
