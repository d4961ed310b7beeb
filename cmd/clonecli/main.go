// Command clonecli is a command-line client for a clonekv server: read,
// write, watch and dump the shared map, or run the Guide's Model Five demo
// client. Run "clonecli help" for the commands.
//
// Adding a subcommand is one function and one entry in commands(): the
// function declares its own flags on inv.Flags, calls inv.Parse for its
// positional arguments, and returns an error (usage errors exit 2, a missing
// key 3, anything else 1).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
