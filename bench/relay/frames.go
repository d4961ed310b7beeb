package relay

import (
	zmq "github.com/pebbe/zmq4"
)

// recvFrames receives every part of one message into dst[:0]. Each frame is
// a fresh Go slice; only the outer slice is reused.
func recvFrames(sock *zmq.Socket, flags zmq.Flag, dst [][]byte) ([][]byte, error) {
	dst = dst[:0]
	for {
		b, err := sock.RecvBytes(flags)
		if err != nil {
			return dst, err
		}
		dst = append(dst, b)
		more, err := sock.GetRcvmore()
		if err != nil {
			return dst, err
		}
		if !more {
			return dst, nil
		}
	}
}

// sendFrames sends frames as one message.
func sendFrames(sock *zmq.Socket, frames [][]byte) error {
	last := len(frames) - 1
	for i, f := range frames {
		flag := zmq.SNDMORE
		if i == last {
			flag = 0
		}
		if _, err := sock.SendBytes(f, flag); err != nil {
			return err
		}
	}
	return nil
}
