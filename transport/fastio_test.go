package transport

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

func pair(t *testing.T, a, b zmq.Type, aopts, bopts Options) (*zmq.Socket, *zmq.Socket) {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	ep := fmt.Sprintf("inproc://pair-%s", t.Name())
	sa, err := Bind(zctx, a, ep, aopts)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := Connect(zctx, b, ep, bopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sa.Close()
		sb.Close()
		zctx.Term()
	})
	return sa, sb
}

func TestFastIOAvailable(t *testing.T) {
	if forcedFallback {
		if FastIO() {
			t.Fatal("built with clonekv_nofastio, yet the one-call paths are on")
		}
		return
	}
	if !FastIO() {
		t.Fatal("pebbe/zmq4's socket handle was not found: the one-call paths are off")
	}
}

func TestSendFlatRecvRoundTrip(t *testing.T) {
	push, pull := pair(t, zmq.PUSH, zmq.PULL, Options{}, Options{})
	var f Flat
	big := bytes.Repeat([]byte("B"), 100<<10) // larger than the receiver's first buffer
	f.Add([]byte("k1"), []byte{0, 0, 0, 0, 0, 0, 0, 1}, nil, []byte("a=b\n"), []byte("v1"))
	f.Add([]byte("k2"), []byte{0, 0, 0, 0, 0, 0, 0, 2}, nil, nil, big)
	f.Add([]byte("k3"), []byte{0, 0, 0, 0, 0, 0, 0, 3}, nil, nil, nil)
	if n, err := SendFlat(push, &f, 0, 0, nil, 0); n != 3 || err != nil {
		t.Fatalf("SendFlat = %d, %v", n, err)
	}
	// from/max select a window.
	if n, err := SendFlat(push, &f, 1, 1, nil, 0); n != 1 || err != nil {
		t.Fatalf("SendFlat window = %d, %v", n, err)
	}
	rx := NewReceiver(pull)
	for i, want := range []int{0, 1, 2, 1} {
		frames, n, err := rx.Recv(0)
		if err != nil || n != 5 {
			t.Fatalf("recv %d: n=%d err=%v", i, n, err)
		}
		exp := f.Message(want)
		for j := range exp {
			if !bytes.Equal(frames[j], exp[j]) {
				t.Fatalf("recv %d frame %d: %d bytes, want %d", i, j, len(frames[j]), len(exp[j]))
			}
		}
	}
	if _, _, err := rx.Recv(zmq.DONTWAIT); !IsAgain(err) {
		t.Fatalf("empty DONTWAIT recv: %v, want EAGAIN", err)
	}
}

func TestReceiverCountsExtraFrames(t *testing.T) {
	push, pull := pair(t, zmq.PUSH, zmq.PULL, Options{}, Options{})
	frames := make([][]byte, MaxFrames+3)
	for i := range frames {
		frames[i] = []byte{byte(i)}
	}
	if err := SendMessage(push, frames, 0); err != nil {
		t.Fatal(err)
	}
	got, n, err := NewReceiver(pull).Recv(0)
	if err != nil || n != MaxFrames+3 || len(got) != MaxFrames {
		t.Fatalf("got %d kept of %d (%v), want %d of %d", len(got), n, err, MaxFrames, MaxFrames+3)
	}
}

// TestSendFlatStopsAtHighWaterMark: on a ROUTER with ROUTER_MANDATORY a full
// peer makes SendFlat stop with EAGAIN instead of dropping, and what was
// sent arrives whole.
func TestSendFlatStopsAtHighWaterMark(t *testing.T) {
	router, dealer := pair(t, zmq.ROUTER, zmq.DEALER, Options{SndHWM: 10, Mandatory: true}, Options{RcvHWM: 10, Identity: "peer"})
	// Let the router learn the peer.
	if err := SendMessage(dealer, [][]byte{[]byte("hi")}, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := RecvMessage(router, 0, nil); err != nil {
		t.Fatal(err)
	}
	var f Flat
	for i := 0; i < 1000; i++ {
		f.Add([]byte(fmt.Sprint(i)))
	}
	sent, err := SendFlat(router, &f, 0, 0, []byte("peer"), zmq.DONTWAIT)
	if !IsAgain(err) || sent == 0 || sent >= 1000 {
		t.Fatalf("sent %d, err %v: want a partial send ending in EAGAIN", sent, err)
	}
	rx := NewReceiver(dealer)
	for i := 0; i < sent; i++ {
		frames, _, err := rx.Recv(0)
		if err != nil || string(frames[0]) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q %v", i, frames, err)
		}
	}
	// Drained: the rest goes through now.
	deadline := time.Now().Add(5 * time.Second)
	for next := sent; next < 1000; {
		n, err := SendFlat(router, &f, next, 0, []byte("peer"), zmq.DONTWAIT)
		if err != nil && !IsAgain(err) {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			frames, _, err := rx.Recv(0)
			if err != nil || string(frames[0]) != fmt.Sprint(next+i) {
				t.Fatalf("message %d: %q %v", next+i, frames, err)
			}
		}
		next += n
		if time.Now().After(deadline) {
			t.Fatalf("stuck at %d", next)
		}
	}
	// An unknown peer is unreachable.
	if _, err := SendFlat(router, &f, 0, 1, []byte("nobody"), zmq.DONTWAIT); !IsHostUnreachable(err) {
		t.Fatalf("send to unknown peer: %v, want EHOSTUNREACH", err)
	}
}

func TestClone(t *testing.T) {
	in := [][]byte{[]byte("a"), nil, []byte("bcd")}
	out := Clone(in)
	in[2][0] = 'X'
	if string(out[0]) != "a" || len(out[1]) != 0 || string(out[2]) != "bcd" {
		t.Fatalf("Clone = %q", out)
	}
}

// TestFlatMessageOffsets: Message finds each message wherever it starts,
// for messages added with Add (offsets recorded), for Sizes appended by
// hand (offsets computed once) and after Reset.
func TestFlatMessageOffsets(t *testing.T) {
	var f Flat
	want := make([][][]byte, 0, 50)
	for i := range 50 {
		msg := [][]byte{bytes.Repeat([]byte{'k'}, i%7), {byte(i)}, bytes.Repeat([]byte{'v'}, (i*13)%29)}
		f.Add(msg...)
		want = append(want, msg)
	}
	for _, i := range []int{49, 0, 17, 48, 1} {
		if got := f.Message(i); !slices.EqualFunc(got, want[i], bytes.Equal) {
			t.Fatalf("message %d: %q, want %q", i, got, want[i])
		}
	}
	// Two messages appended by hand, then one more with Add.
	for _, m := range [][][]byte{{[]byte("h1"), {1}, []byte("x")}, {[]byte("h2"), {2}, nil}} {
		for _, fr := range m {
			f.Data = append(f.Data, fr...)
			f.Sizes = append(f.Sizes, uint64(len(fr)))
		}
		want = append(want, m)
	}
	f.Add([]byte("last"), []byte{3}, []byte("y"))
	want = append(want, [][]byte{[]byte("last"), {3}, []byte("y")})
	for i := range want {
		if got := f.Message(i); !slices.EqualFunc(got, want[i], bytes.Equal) {
			t.Fatalf("after hand-appended sizes, message %d: %q, want %q", i, got, want[i])
		}
	}
	f.Reset()
	f.Add([]byte("a"), []byte{9}, []byte("b"))
	if f.Len() != 1 || string(f.Message(0)[0]) != "a" {
		t.Fatalf("after Reset: %d messages, first %q", f.Len(), f.Message(0))
	}
}
