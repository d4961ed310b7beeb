package guideclient

import (
	"errors"
	"fmt"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
)

// sockets owns a context and the sockets opened in it, for one goroutine.
type sockets struct {
	zctx  *zmq.Context
	socks []*zmq.Socket
}

// open creates a socket with the shortest safe linger (transport.MinLinger:
// libzmq can abort on a socket closed with linger 0), subscribes it to subs
// (for a SUB) and connects it to ep.
func (s *sockets) open(typ zmq.Type, ep string, subs ...string) (*zmq.Socket, error) {
	sock, err := s.zctx.NewSocket(typ)
	if err != nil {
		return nil, fmt.Errorf("guideclient: new %v socket: %w", typ, err)
	}
	s.socks = append(s.socks, sock)
	if err := sock.SetLinger(transport.MinLinger); err != nil {
		return nil, fmt.Errorf("guideclient: set linger on %v socket: %w", typ, err)
	}
	for _, sub := range subs {
		if err := sock.SetSubscribe(sub); err != nil {
			return nil, fmt.Errorf("guideclient: subscribe %q: %w", sub, err)
		}
	}
	if err := sock.Connect(ep); err != nil {
		return nil, fmt.Errorf("guideclient: connect %s: %w", ep, err)
	}
	return sock, nil
}

// close closes every socket and terminates the context.
func (s *sockets) close() error {
	var errs []error
	for _, sock := range s.socks {
		errs = append(errs, sock.SetLinger(0), sock.Close())
	}
	if err := s.zctx.Term(); err != nil {
		errs = append(errs, fmt.Errorf("guideclient: term context: %w", err))
	}
	return errors.Join(errs...)
}

// recvFrames receives every part of one message into dst[:0].
func recvFrames(sock *zmq.Socket, dst [][]byte) ([][]byte, error) {
	dst = dst[:0]
	for {
		b, err := sock.RecvBytes(0)
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
