package transport

import (
	"strings"
	"testing"

	zmq "github.com/pebbe/zmq4"
)

func TestBindPortsPicksAFreeRangeAndReportsBusyOnes(t *testing.T) {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	specs := []PortSpec{{Type: zmq.PULL, Offset: 0}, {Type: zmq.PUB, Offset: 2}}
	socks, port, err := BindPorts(zctx, "127.0.0.1", 0, specs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	if port < pickLow || port >= pickHigh || len(socks) != 2 {
		t.Fatalf("port %d, %d sockets", port, len(socks))
	}
	// The same base again: the first socket's port is taken, and the error
	// names it.
	if _, _, err := BindPorts(zctx, "127.0.0.1", port, specs); err == nil ||
		!strings.Contains(err.Error(), Endpoint("127.0.0.1", port)) {
		t.Fatalf("busy range: err %v, want one naming %s", err, Endpoint("127.0.0.1", port))
	}
}

func TestEndpoint(t *testing.T) {
	for host, want := range map[string]string{
		"*": "tcp://*:5556", "127.0.0.1": "tcp://127.0.0.1:5556", "::1": "tcp://[::1]:5556", "[::1]": "tcp://[::1]:5556",
	} {
		if got := Endpoint(host, 5556); got != want {
			t.Errorf("Endpoint(%q) = %q, want %q", host, got, want)
		}
	}
}
