package transport

import (
	"fmt"
	"math/rand/v2"

	zmq "github.com/pebbe/zmq4"
)

// PortSpec is one socket of a server that listens on consecutive ports: its
// type, its offset from the base port and its options.
type PortSpec struct {
	Type    zmq.Type
	Offset  int
	Options Options
}

// Random base ports are drawn below Linux's ephemeral range (32768 and up),
// so outgoing connections rarely hold the ports we want.
const (
	pickLow      = 20000
	pickHigh     = 32000
	pickAttempts = 100
)

// BindPorts creates the sockets of specs and binds each to
// tcp://host:port+Offset. With port 0 it tries random base ports until every
// socket binds (the ":0" of a port triple). It returns the sockets in the
// order of specs and the base port; on failure no socket is left open.
func BindPorts(zctx *zmq.Context, host string, port int, specs []PortSpec) ([]*zmq.Socket, int, error) {
	if port != 0 {
		socks, err := bindAt(zctx, host, port, specs)
		return socks, port, err
	}
	var last error
	for range pickAttempts {
		p := pickLow + rand.IntN(pickHigh-pickLow)
		socks, err := bindAt(zctx, host, p, specs)
		if err == nil {
			return socks, p, nil
		}
		last = err
	}
	return nil, 0, fmt.Errorf("no free port range found in %d attempts: %w", pickAttempts, last)
}

func bindAt(zctx *zmq.Context, host string, port int, specs []PortSpec) ([]*zmq.Socket, error) {
	socks := make([]*zmq.Socket, 0, len(specs))
	for _, sp := range specs {
		sock, err := Bind(zctx, sp.Type, Endpoint(host, port+sp.Offset), sp.Options)
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return nil, err
		}
		socks = append(socks, sock)
	}
	return socks, nil
}

// Endpoint returns the tcp endpoint for host and port, bracketing an IPv6
// host.
func Endpoint(host string, port int) string {
	for i := 0; i < len(host); i++ {
		if host[i] == ':' && host[0] != '[' {
			return fmt.Sprintf("tcp://[%s]:%d", host, port)
		}
	}
	return fmt.Sprintf("tcp://%s:%d", host, port)
}
