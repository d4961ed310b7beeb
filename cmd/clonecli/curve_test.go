package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/server"
)

// startCurveServer runs a CURVE server with the key pair in secretFile that
// admits only the clients whose public keys are given.
func startCurveServer(t *testing.T, secretFile string, allowed ...string) string {
	t.Helper()
	kp, err := config.ReadSecretKeyFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	return startServerWith(t, server.Config{Curve: &server.CurveConfig{SecretKey: kp.Secret, AllowedClients: allowed}})
}

// TestCurve: keys made by "clonecli keygen" let set and get round-trip
// through a CURVE server that admits the client's key (flags or
// environment); without keys, or with a key the server does not admit, get
// fails within --timeout with a message about CURVE; half a key
// configuration is a usage error.
func TestCurve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := func(name string) string { return filepath.Join(dir, name) }
	// keygen must not need the key files the environment names (they may
	// be the ones it is about to write).
	env := []string{EnvCurveServerKeyFile + "=" + key("server.pub"), EnvCurveKeyFile + "=" + key("alice.key")}
	for _, name := range []string{"server", "alice", "mallory"} {
		if r := cli(t, env, "keygen", "--dir", dir, name).must(t, 0); !strings.Contains(r.stdout, key(name+".pub")) {
			t.Fatalf("keygen %s printed %q", name, r.stdout)
		}
	}
	alice, err := config.ReadPublicKeyFile(key("alice.pub"))
	if err != nil {
		t.Fatal(err)
	}
	ep := startCurveServer(t, key("server.key"), alice)

	cli(t, nil, "--server", ep, "--curve-server-key-file", key("server.pub"), "--curve-key-file", key("alice.key"),
		"set", "/secure/k", "secret value").must(t, 0)
	if r := cli(t, append(env, EnvServer+"="+ep), "get", "/secure/k").must(t, 0); r.stdout != "secret value\n" {
		t.Fatalf("get with keys from the environment printed %q", r.stdout)
	}

	const timeout = 1500 * time.Millisecond
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no keys", nil, "set --curve-server-key-file (its .pub) and --curve-key-file"},
		{"unknown client key", []string{"--curve-server-key-file", key("server.pub"), "--curve-key-file", key("mallory.key")},
			"admits this client's public key"},
		{"wrong server key", []string{"--curve-server-key-file", key("alice.pub"), "--curve-key-file", key("alice.key")},
			"is this server's .pub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits out the timeout
			args := append([]string{"--server", ep, "--timeout", timeout.String()}, tc.args...)
			r := cli(t, nil, append(args, "get", "/secure/k")...).must(t, exitFailure)
			if !strings.Contains(r.stderr, "cannot reach a clonekv server at "+ep) || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q, want the address and %q", r.stderr, tc.want)
			}
			if r.stdout != "" || r.took > timeout+3*time.Second {
				t.Errorf("took %v, printed %q", r.took, r.stdout)
			}
		})
	}

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"server key only", nil, []string{"--curve-server-key-file", key("server.pub")}, "--curve-server-key-file needs --curve-key-file"},
		{"client key only", []string{EnvCurveKeyFile + "=" + key("alice.key")}, nil, "--curve-key-file needs --curve-server-key-file"},
		{"missing file", nil, []string{"--curve-server-key-file", key("nobody.pub"), "--curve-key-file", key("alice.key")}, "no such file"},
		{"public file as own key", nil, []string{"--curve-server-key-file", key("server.pub"), "--curve-key-file", key("alice.pub")}, "alice.pub: mode 0644"},
	} {
		r := cli(t, tc.env, append(append([]string{"--server", ep}, tc.args...), "get", "/secure/k")...).must(t, exitUsage)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: stderr %q, want %q", tc.name, r.stderr, tc.want)
		}
	}
}
