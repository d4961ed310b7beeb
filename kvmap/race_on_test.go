//go:build race

package kvmap

// scaled shrinks a test's size under the race detector, which makes every
// map operation some ten times slower; the checks stay the same.
func scaled(n int) int { return n / 2 }
