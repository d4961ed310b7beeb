package client

import (
	"testing"

	"github.com/clonekv/clonekv/internal/tcpproxy"
)

// cutProxy is a tcpproxy.Proxy closed when the test ends.
type cutProxy struct{ *tcpproxy.Proxy }

func startProxy(t testing.TB, target int) cutProxy {
	t.Helper()
	p, err := tcpproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return cutProxy{p}
}

func (p cutProxy) endpoint() string { return p.Endpoint() }
func (p cutProxy) cut()             { p.Cut() }
func (p cutProxy) restore()         { p.Restore() }
