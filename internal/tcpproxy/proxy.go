// Package tcpproxy is a TCP relay for a clone server's three ports (P, P+1,
// P+2) that can be cut and pointed elsewhere, for tests and benchmarks of
// what clients do when their connection goes away: Cut closes every
// relayed connection and, until Restore, closes each new one as soon as it
// is accepted (as an outage does to a client that keeps redialling);
// Retarget sends new connections to another server (a restarted one on
// another port). It listens on 127.0.0.1 only.
package tcpproxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
)

// Proxy relays three consecutive ports. Its goroutines (one accept loop
// per port, two copiers per connection) are its own and end with Close.
type Proxy struct {
	port int // the proxy's base port

	mu     sync.Mutex
	target int // the server's base port
	down   bool
	closed bool
	conns  map[net.Conn]struct{}
	ls     []net.Listener
	wg     sync.WaitGroup
}

// Start listens on a free port triple below Linux's ephemeral range and
// relays it to the server whose base port is target.
func Start(target int) (*Proxy, error) {
	p := &Proxy{target: target, conns: map[net.Conn]struct{}{}}
	var err error
	for try := 0; try < 200 && p.ls == nil; try++ {
		base := 20000 + rand.IntN(12000)
		var ls []net.Listener
		for i := range 3 {
			var l net.Listener
			if l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i)); err != nil {
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
		return nil, fmt.Errorf("tcpproxy: no free port triple: %w", err)
	}
	for i, l := range p.ls {
		p.wg.Add(1)
		go p.accept(l, i)
	}
	return p, nil
}

// Port is the proxy's base port: clients use tcp://127.0.0.1:Port.
func (p *Proxy) Port() int { return p.port }

// Endpoint is the proxy's base address.
func (p *Proxy) Endpoint() string { return fmt.Sprintf("tcp://127.0.0.1:%d", p.port) }

func (p *Proxy) accept(l net.Listener, offset int) {
	defer p.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		down, target := p.down || p.closed, p.target
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", target+offset))
		if err != nil {
			c.Close() // the server is not there: as a refused connection
			continue
		}
		p.mu.Lock()
		if p.down || p.closed {
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

// copy moves bytes from src to dst until either side ends (an error, a
// reset or a Cut end it as EOF does), then closes both.
func (p *Proxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut drops every relayed connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore relays new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// Retarget sends new connections to the server at base port target; the
// relayed ones stay where they are.
func (p *Proxy) Retarget(target int) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Close stops listening, drops every connection and waits for the
// proxy's goroutines. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	var errs []error
	if !p.closed {
		p.closed = true
		for _, l := range p.ls {
			errs = append(errs, l.Close())
		}
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return errors.Join(errs...)
}
