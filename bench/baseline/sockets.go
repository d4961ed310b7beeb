package baseline

import (
	"errors"
	"fmt"
	"math/rand/v2"

	zmq "github.com/pebbe/zmq4"
)

// sockSpec is one socket to bind at base port + offset.
type sockSpec struct {
	typ    zmq.Type
	offset int
}

// Random base ports are drawn from [pickLow, pickHigh), below Linux's
// ephemeral range so that outgoing connections rarely collide with them.
const (
	pickLow      = 20000
	pickHigh     = 32000
	pickAttempts = 64
)

// openBound creates the sockets and binds each at tcp://host:port+offset. If
// port is 0 it tries random base ports until every socket binds. It returns
// the sockets (LINGER 0) in the order of specs and the base port.
func openBound(zctx *zmq.Context, host string, port int, specs []sockSpec) ([]*zmq.Socket, int, error) {
	if port != 0 {
		socks, err := tryBind(zctx, host, port, specs)
		return socks, port, err
	}
	var lastErr error
	for range pickAttempts {
		p := pickLow + rand.IntN(pickHigh-pickLow)
		socks, err := tryBind(zctx, host, p, specs)
		if err == nil {
			return socks, p, nil
		}
		lastErr = err
	}
	return nil, 0, fmt.Errorf("no free port triple in %d attempts: %w", pickAttempts, lastErr)
}

// tryBind creates and binds the sockets at one base port, closing them all
// if any fails.
func tryBind(zctx *zmq.Context, host string, port int, specs []sockSpec) ([]*zmq.Socket, error) {
	socks := make([]*zmq.Socket, 0, len(specs))
	fail := func(err error) ([]*zmq.Socket, error) {
		for _, s := range socks {
			_ = closeSocket(s)
		}
		return nil, err
	}
	for _, sp := range specs {
		sock, err := zctx.NewSocket(sp.typ)
		if err != nil {
			return fail(fmt.Errorf("new %v socket: %w", sp.typ, err))
		}
		socks = append(socks, sock)
		if err := sock.SetLinger(0); err != nil {
			return fail(fmt.Errorf("set linger on %v socket: %w", sp.typ, err))
		}
		ep := fmt.Sprintf("tcp://%s:%d", host, port+sp.offset)
		if err := sock.Bind(ep); err != nil {
			return fail(fmt.Errorf("bind %s: %w", ep, err))
		}
	}
	return socks, nil
}

// closeSocket closes sock with LINGER 0.
func closeSocket(sock *zmq.Socket) error {
	return errors.Join(sock.SetLinger(0), sock.Close())
}
