// Package transport is the only code in clonekv that touches ZeroMQ.
//
// Each socket adapter (Reader for the collector's PULL or SUB, Writer for the
// PUB, Router for the snapshot ROUTER) is an actor: spawned, addressed by
// PID and stopped like any other. Each owns exactly one goroutine that does
// the socket's I/O, because a ZeroMQ socket is not thread-safe and an actor's
// Receive may run on any goroutine. Readers turn frames into actor messages;
// writers drain what actors hand them into the socket.
package transport

import (
	"errors"
	"syscall"

	zmq "github.com/pebbe/zmq4"
)

// MaxFrames is how many frames of one message RecvMessage keeps. The Clone
// protocol never needs more than six (ROUTER identity plus five); frames
// beyond this are read and discarded so a hostile peer cannot make us
// buffer an unbounded frame list.
const MaxFrames = 8

// RecvMessage receives one multi-part message into dst (reset to length 0)
// and returns the frames kept and the total number of frames the message
// had. With flags zmq.DONTWAIT it returns an EAGAIN error when nothing is
// waiting. Frames past MaxFrames are discarded but counted.
func RecvMessage(sock *zmq.Socket, flags zmq.Flag, dst [][]byte) ([][]byte, int, error) {
	dst = dst[:0]
	total := 0
	for {
		frame, err := sock.RecvBytes(flags)
		if err != nil {
			if total == 0 {
				return dst, 0, err
			}
			// A later part of a message that has started is always there
			// (ZeroMQ delivers messages atomically), so an error here means
			// the socket is going away.
			return dst, total, err
		}
		total++
		if len(dst) < MaxFrames {
			dst = append(dst, frame)
		}
		more, err := sock.GetRcvmore()
		if err != nil {
			return dst, total, err
		}
		if !more {
			return dst, total, nil
		}
		flags &^= zmq.DONTWAIT
	}
}

// SendMessage sends frames as one multi-part message. flags (e.g.
// zmq.DONTWAIT) apply to every part; zmq.SNDMORE is added as needed.
func SendMessage(sock *zmq.Socket, frames [][]byte, flags zmq.Flag) error {
	last := len(frames) - 1
	for i, f := range frames {
		fl := flags
		if i < last {
			fl |= zmq.SNDMORE
		}
		if _, err := sock.SendBytes(f, fl); err != nil {
			return err
		}
	}
	return nil
}

// IsAgain reports whether err is ZeroMQ's EAGAIN (nothing to receive, or a
// send would block).
func IsAgain(err error) bool { return errno(err) == zmq.Errno(syscall.EAGAIN) }

// IsTerm reports whether err means the socket's context is terminating or
// the socket is closed.
func IsTerm(err error) bool {
	return errno(err) == zmq.ETERM || errors.Is(err, zmq.ErrorSocketClosed)
}

// IsInterrupted reports whether err is EINTR (a signal arrived).
func IsInterrupted(err error) bool { return errno(err) == zmq.Errno(syscall.EINTR) }

// IsHostUnreachable reports whether err is EHOSTUNREACH: a ROUTER with
// ROUTER_MANDATORY was asked to send to a peer that is not connected.
func IsHostUnreachable(err error) bool { return errno(err) == zmq.EHOSTUNREACH }

func errno(err error) zmq.Errno {
	if err == nil {
		return 0
	}
	return zmq.AsErrno(err)
}
