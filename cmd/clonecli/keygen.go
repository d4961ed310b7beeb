package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/clonekv/clonekv/config"
)

// cmdKeygen: keygen NAME [--dir DIR]. Writes a CURVE key pair in czmq's
// certificate format: clonesrv takes a server's NAME.key as
// --curve-secret-key-file and clients' NAME.pub files in its --curve-allow
// directory; a client takes its own NAME.key and the server's NAME.pub. It
// never overwrites a key.
func cmdKeygen(inv *invocation) error {
	dir := inv.Flags.String("dir", ".", "directory to write NAME.key and NAME.pub in")
	args, err := inv.Parse(1, 1)
	if err != nil {
		return err
	}
	name := args[0]
	if name == "" || strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\`) {
		return &usageError{fmt.Sprintf("keygen: NAME %q must be a plain file name (no directories, not hidden)", name)}
	}
	kp, err := config.WriteKeyPair(*dir, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(inv.Stdout, "secret key: %s (keep it private)\npublic key: %s\npublic-key = %q\n",
		filepath.Join(*dir, name+".key"), filepath.Join(*dir, name+".pub"), kp.Public)
	return nil
}
