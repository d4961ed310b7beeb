// Package testkit holds the test helpers that several packages' tests
// share: a quiet-unless-verbose logger, running an in-process server until
// the test ends, receiving one message within a bound, building a Go
// binary and finding a free port triple.
//
// It is an ordinary package (not a _test.go file) so that the tests of
// several packages can import it. It must not import clonekv/server: the
// server package's own (in-package) tests use it, and that would be an
// import cycle. Servers are therefore taken through the small Runner
// interface.
package testkit
