//go:build !race

package kvmap

// scaled is a test's size; see race_on_test.go.
func scaled(n int) int { return n }
