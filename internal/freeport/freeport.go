// Package freeport finds TCP ports free on 127.0.0.1 for servers that tests
// and benchmarks start as separate processes (or restart on the same
// ports), below Linux's ephemeral range as the server's own choice is.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
)

// Runs returns count base ports, each the first of width consecutive ports
// that are free on 127.0.0.1 right now; no two runs overlap.
func Runs(count, width int) ([]int, error) {
	var out []int
	for try := 0; len(out) < count; try++ {
		if try == 500 {
			return nil, fmt.Errorf("no %d runs of %d free ports on 127.0.0.1", count, width)
		}
		p := 20000 + rand.IntN(12000)
		if overlaps(out, p, width) || !free(p, width) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

func overlaps(runs []int, p, width int) bool {
	for _, b := range runs {
		if p < b+width && b < p+width {
			return true
		}
	}
	return false
}

// free reports whether ports p..p+width-1 can all be listened on now.
func free(p, width int) bool {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range width {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+i))
		if err != nil {
			return false
		}
		ls = append(ls, l)
	}
	return true
}
