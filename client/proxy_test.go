package client

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/clonekv/clonekv/internal/testkit"
)

// cutProxy relays a server's three ports (P, P+1, P+2) through its own
// three on 127.0.0.1, and can cut them: cut closes every relayed
// connection and, until restore, closes each new one as soon as it is
// accepted, as a network outage does to a client that keeps redialling.
// Its goroutines (an accept loop per port, two copiers per connection)
// are owned by it and end with close, which the test's cleanup calls.
type cutProxy struct {
	port int // the proxy's base port: give clients tcp://127.0.0.1:<port>

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	ls    []net.Listener
	wg    sync.WaitGroup
}

func startProxy(t testing.TB, target int) *cutProxy {
	t.Helper()
	p := &cutProxy{conns: map[net.Conn]struct{}{}}
	for try := 0; try < 20 && p.ls == nil; try++ {
		base := testkit.FreePorts(t)
		var ls []net.Listener
		for i := range 3 {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		if len(ls) == 3 {
			p.ls, p.port = ls, base
			break
		}
		for _, l := range ls {
			l.Close()
		}
	}
	if p.ls == nil {
		t.Fatal("no port triple for the proxy")
	}
	for i, l := range p.ls {
		p.wg.Add(1)
		go p.accept(l, fmt.Sprintf("127.0.0.1:%d", target+i))
	}
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) endpoint() string { return fmt.Sprintf("tcp://127.0.0.1:%d", p.port) }

func (p *cutProxy) accept(l net.Listener, target string) {
	defer p.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.down || p.ls == nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.down || p.ls == nil {
			p.mu.Unlock()
			c.Close()
			up.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.copy(c, up)
		go p.copy(up, c)
	}
}

// copy moves bytes from src to dst until either side fails, then closes both.
func (p *cutProxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src) // an error (reset, closed by cut) ends it as EOF does
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// cut drops every relayed connection and refuses new ones until restore.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *cutProxy) close() {
	p.mu.Lock()
	ls := p.ls
	p.ls = nil
	for _, l := range ls {
		l.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
