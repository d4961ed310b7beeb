package client

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// freePort returns a base port P such that P, P+1 and P+2 are free on
// 127.0.0.1 right now (below Linux's ephemeral range, as the server does).
func freePort(t testing.TB) int {
	t.Helper()
	for try := 0; try < 200; try++ {
		p := 20000 + rand.IntN(12000)
		ok := true
		var ls []net.Listener
		for i := range 3 {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+i))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free port triple")
	return 0
}
