package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FreePorts returns a base port P such that P, P+1 and P+2 are free on
// 127.0.0.1 right now (below Linux's ephemeral range, as the server does),
// for a server that a test starts as a separate process or restarts on the
// same ports.
func FreePorts(t testing.TB) int {
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
