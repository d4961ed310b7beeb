package tcpproxy

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"
)

// echoTriple listens on three consecutive ports, echoing lines back.
func echoTriple(t *testing.T) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		l0, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l0.Addr().(*net.TCPAddr).Port
		l1, err1 := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+1))
		l2, err2 := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+2))
		if err1 != nil || err2 != nil {
			for _, l := range []net.Listener{l0, l1, l2} {
				if l != nil {
					l.Close()
				}
			}
			continue
		}
		for _, l := range []net.Listener{l0, l1, l2} {
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						sc := bufio.NewScanner(c)
						for sc.Scan() {
							fmt.Fprintf(c, "%s\n", sc.Text())
						}
					}()
				}
			}()
		}
		return base
	}
	t.Fatal("no port triple")
	return 0
}

func roundTrip(c net.Conn, r *bufio.Reader, s string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", s); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

// TestCutRestore: the proxy relays all three ports; Cut ends relayed
// connections and refuses new ones; Restore relays again.
func TestCutRestore(t *testing.T) {
	base := echoTriple(t)
	p, err := Start(base)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var conns []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port()+i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, err := roundTrip(c, bufio.NewReader(c), "hi"); err != nil || got != "hi\n" {
			t.Fatalf("port %d: %q, %v", i, got, err)
		}
		conns = append(conns, c)
	}
	p.Cut()
	for _, c := range conns {
		if _, err := roundTrip(c, bufio.NewReader(c), "gone"); err == nil {
			t.Fatal("a relayed connection survived the cut")
		}
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port()))
	if err == nil {
		if _, err := roundTrip(c, bufio.NewReader(c), "x"); err == nil {
			t.Fatal("relayed while cut")
		}
		c.Close()
	}
	p.Restore()
	c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.Port()+1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, bufio.NewReader(c), "back"); err != nil || got != "back\n" {
		t.Fatalf("after restore: %q, %v", got, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
