package testkit

import (
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
)

// RecvWithin receives one message on s if one arrives within d, and
// returns an error otherwise, so a test never blocks on a socket without a
// bound. It must be called from the goroutine that owns s.
func RecvWithin(s *zmq.Socket, d time.Duration) ([][]byte, error) {
	// A deadline already passed (d <= 0) must not become zmq's "wait
	// forever" (a negative poll timeout): look once, without waiting.
	d = max(d, 0)
	poller := zmq.NewPoller()
	poller.Add(s, zmq.POLLIN)
	polled, err := poller.Poll(d)
	if err != nil {
		return nil, err
	}
	if len(polled) == 0 {
		return nil, fmt.Errorf("nothing within %v", d)
	}
	frames, _, err := transport.RecvMessage(s, 0, nil)
	return frames, err
}
