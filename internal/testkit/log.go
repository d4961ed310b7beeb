package testkit

import (
	"log/slog"
	"os"
	"testing"
)

// Logger returns a logger that writes at level and above to stderr when the
// tests run with -v, and discards everything otherwise, so a passing run
// stays quiet while a verbose one shows what the server did.
func Logger(level slog.Level) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.DiscardHandler)
}
