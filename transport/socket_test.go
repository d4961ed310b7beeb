package transport

import (
	"testing"

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
