package transport

import (
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// TestOptionsSetKernelBuffers: SndBuf reaches the socket; zero leaves the
// kernel's (libzmq reports -1 or 0 for "not set", depending on version).
func TestOptionsSetKernelBuffers(t *testing.T) {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	for _, want := range []int{0, 256 << 10} {
		sock, err := NewSocket(zctx, zmq.ROUTER, Options{SndBuf: want})
		if err != nil {
			t.Fatal(err)
		}
		got, err := sock.GetSndbuf()
		sock.Close()
		if err != nil {
			t.Fatal(err)
		}
		if (want == 0 && got > 0) || (want > 0 && got != want) {
			t.Errorf("SndBuf %d: socket reports %d", want, got)
		}
	}
}

// TestHeartbeatTTLCapped: a TTL past what a ZMTP PING can carry is cut to
// MaxHeartbeatTTL (libzmq refuses it with EINVAL otherwise), and the
// longest it can carry is accepted.
func TestHeartbeatTTLCapped(t *testing.T) {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	for _, ttl := range []time.Duration{MaxHeartbeatTTL, 3 * time.Hour} {
		sock, err := NewSocket(zctx, zmq.SUB, Options{Heartbeat: &Heartbeat{Interval: time.Hour, Timeout: 3 * time.Hour, TTL: ttl}})
		if err != nil {
			t.Fatalf("TTL %v: %v", ttl, err)
		}
		sock.Close()
	}
}
