package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/config"
)

func keygen(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	inv := &invocation{Ctx: context.Background(), Name: "keygen", Flags: fs, Stdout: &out, Stderr: io.Discard,
		args: args, g: &globals{timeout: time.Second, logLevel: "warn"}}
	err := cmdKeygen(inv)
	return out.String(), err
}

// TestKeygen: the pair written loads as clonesrv's secret key file and as
// an allowed client key; an existing key is never overwritten.
func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	out, err := keygen(t, "--dir", dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := config.ReadSecretKeyFile(filepath.Join(dir, "alice.key"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := config.ReadPublicKeyFile(filepath.Join(dir, "alice.pub"))
	if err != nil || pub != kp.Public {
		t.Fatalf("alice.pub: %q %v, want %q", pub, err, kp.Public)
	}
	if !strings.Contains(out, kp.Public) {
		t.Errorf("output lacks the public key:\n%s", out)
	}
	if _, err := keygen(t, "--dir", dir, "alice"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second keygen alice: %v, want an error (file exists)", err)
	}
	if again, _ := config.ReadSecretKeyFile(filepath.Join(dir, "alice.key")); again != kp {
		t.Error("the existing key changed")
	}
	for _, bad := range []string{"../x", ".hidden", "a/b"} {
		if _, err := keygen(t, "--dir", dir, bad); err == nil {
			t.Errorf("keygen %q: no error", bad)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("%d files in %s, want 2", len(entries), dir)
	}
}
