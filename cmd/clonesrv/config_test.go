package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/server"
)

// TestStartupErrors: every configuration error stops clonesrv before it
// binds anything, with exit status 2 and a message naming the key and
// where its value came from.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := config.WriteKeyPair(dir, "server"); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "server.key")
	open := filepath.Join(dir, "open.key")
	data, _ := os.ReadFile(secret)
	os.WriteFile(open, data, 0o644)
	empty := t.TempDir()
	conf := filepath.Join(dir, "clonekv.toml")
	os.WriteFile(conf, []byte("collector = \"push\"\nmax-key = 0\nprot = 5\n"), 0o644)
	conf2 := filepath.Join(dir, "ok.toml")
	os.WriteFile(conf2, []byte("collector = \"push\"\n"), 0o644)

	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{"port out of range (env)", nil, []string{"CLONEKV_PORT=70000"}, []string{"port = 70000 (from env CLONEKV_PORT): out of range 0..65533"}},
		{"negative port (flag)", []string{"--port", "-1"}, nil, []string{"port = -1 (from flag --port): out of range"}},
		{"collector (file)", []string{"--config", conf2}, nil, []string{`collector = "push" (from file ` + conf2 + `): want "pull" or "sub"`}},
		{"unknown file key", []string{"--config", conf}, nil, []string{`unknown key "prot"`}},
		{"negative hugz", []string{"--hugz", "-1s"}, nil, []string{`hugz = "-1s" (from flag --hugz): must not be negative`}},
		{"negative pub-linger", nil, []string{"CLONEKV_PUB_LINGER=-5ms"}, []string{`pub-linger = "-5ms" (from env CLONEKV_PUB_LINGER): must not be negative`}},
		{"reap-interval zero", []string{"--reap-interval", "0s"}, nil, []string{`reap-interval = "0s" (from flag --reap-interval): must be positive`}},
		{"max-key zero", []string{"--max-key", "0"}, nil, []string{"max-key = 0 (from flag --max-key): out of range 1..65535"}},
		{"gc-percent zero", []string{"--gc-percent", "0"}, nil, []string{"gc-percent = 0 (from flag --gc-percent): want a positive percentage"}},
		{"max-key too large", []string{"--max-key", "65536"}, nil, []string{"max-key = 65536"}},
		{"negative resume window", []string{"--resume-window", "-1"}, nil, []string{"resume-window = -1 (from flag --resume-window): must not be negative"}},
		{"max-body zero", []string{"--max-body", "0"}, nil, []string{"max-body = 0 (from flag --max-body): must be at least 1"}},
		{"negative hwms", []string{"--pub-hwm", "-1", "--router-hwm", "-2", "--collector-hwm", "-3"}, nil,
			[]string{"pub-hwm = -1", "router-hwm = -2", "collector-hwm = -3"}},
		{"log level", nil, []string{"CLONEKV_LOG_LEVEL=loud"}, []string{`log-level = "loud" (from env CLONEKV_LOG_LEVEL): want debug, info, warn or error`}},
		{"log format", []string{"--log-format", "xml"}, nil, []string{`log-format = "xml" (from flag --log-format): want text or json`}},
		{"http address", []string{"--http", "9556"}, nil, []string{`http = "9556" (from flag --http): want host:port`}},
		{"pprof without http", []string{"--pprof"}, nil, []string{"pprof = true (from flag --pprof): needs the --http listener"}},
		{"missing secret key file", []string{"--curve-secret-key-file", filepath.Join(dir, "none")}, nil, []string{"curve-secret-key-file = ", "no such file"}},
		{"secret key readable by others", []string{"--curve-secret-key-file", open}, nil, []string{"mode 0644 lets others read it; chmod 600"}},
		{"allow without curve", []string{"--curve-allow", empty}, nil, []string{"curve-allow = ", "needs CURVE: set curve-secret-key-file too"}},
		{"empty allow dir", []string{"--curve-secret-key-file", secret, "--curve-allow", empty}, nil, []string{"every client would be refused"}},
		{"unknown env", nil, []string{"CLONEKV_PROT=1"}, []string{`environment variable CLONEKV_PROT: unknown setting "prot"`}},
		{"bad env value", nil, []string{"CLONEKV_HUGZ=often"}, []string{`CLONEKV_HUGZ="often": parse error (want a duration`}},
		{"missing config file", []string{"--config", filepath.Join(dir, "none.toml")}, nil, []string{"config file: open", "none.toml"}},
		{"unknown flag", []string{"--prot", "1"}, nil, []string{"flag provided but not defined: -prot"}},
		{"stray argument", []string{"serve"}, nil, []string{`unexpected arguments ["serve"]`}},
		{"several at once", []string{"--port", "70000", "--collector", "x"}, nil, []string{"port = 70000", `collector = "x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, tc.env, &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestPortInUse: a bind failure is exit 1, after the configuration passed.
func TestPortInUse(t *testing.T) {
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := run([]string{"--bind", "127.0.0.1", "--port", fmt.Sprint(srv.Port())}, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "cannot start") || !strings.Contains(stderr.String(), "in use") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

// TestPrintConfig: --print-config shows each value and its origin, flag >
// env > file > default, and prints a file clonesrv accepts.
func TestPrintConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "clonekv.toml")
	os.WriteFile(conf, []byte("port = 7000\npub-hwm = 5\nbind = \"10.1.1.1\"\nhugz = \"2s\"\n"), 0o644)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--print-config", "--bind", "127.0.0.1"}, []string{"CLONEKV_CONFIG=" + conf, "CLONEKV_PORT=7100", "CLONEKV_HUGZ=3s", "HOME=/x"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, w := range []string{
		`bind = "127.0.0.1"`, "# flag --bind",
		"port = 7100", "# env CLONEKV_PORT",
		`hugz = "3s"`, "# env CLONEKV_HUGZ",
		"pub-hwm = 5", "# file " + conf,
		"router-hwm = 1000", "# default",
		`collector = "pull"`, `curve-secret-key-file = ""`, `http = ""`, "pprof = false",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("--print-config lacks %q:\n%s", w, out)
		}
	}
	printed := filepath.Join(dir, "printed.toml")
	os.WriteFile(printed, stdout.Bytes(), 0o644)
	stdout.Reset()
	if code := run([]string{"--print-config", "--config", printed}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "port = 7100") {
		t.Errorf("printed config does not load back: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
}

// TestExampleConfigLoads: deploy/clonekv.toml, the file the systemd unit
// reads, is a valid configuration.
func TestExampleConfigLoads(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--config", "../../deploy/clonekv.toml", "--print-config"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), `http = "127.0.0.1:9556"`) {
		t.Errorf("example config not applied:\n%s", stdout.String())
	}
}

// TestMemoryLogDefaults: with --memory the snapshot flags left at their
// defaults give way to the log's memory defaults (a zero value), so an
// in-memory server does not keep the disk's 18,432 entries in RAM; a value
// set by flag or environment is kept.
func TestMemoryLogDefaults(t *testing.T) {
	settleArgs := func(args, env []string) server.LogConfig {
		t.Helper()
		fs := flag.NewFlagSet("clonesrv", flag.ContinueOnError)
		var f flags
		defineFlags(fs, &f)
		eff, err := loader.Load(fs, args, env)
		if err != nil {
			t.Fatal(err)
		}
		st, err := settle(eff, &f, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return st.srv.Log
	}
	if l := settleArgs([]string{"--memory"}, nil); l.DataDir != "" || l.SnapshotInterval != 0 || l.SnapshotThreshold != 0 || l.TrailingLogs != 0 {
		t.Errorf("--memory: log config %+v, want the log's memory defaults (zero)", l)
	}
	l := settleArgs([]string{"--memory", "--trailing-logs", "500"}, []string{"CLONEKV_SNAPSHOT_THRESHOLD=300"})
	if l.TrailingLogs != 500 || l.SnapshotThreshold != 300 || l.SnapshotInterval != 0 {
		t.Errorf("--memory with set values: log config %+v, want trailing 500, threshold 300, interval default", l)
	}
	window := func(args ...string) int64 {
		t.Helper()
		fs := flag.NewFlagSet("clonesrv", flag.ContinueOnError)
		var f flags
		defineFlags(fs, &f)
		eff, err := loader.Load(fs, args, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := settle(eff, &f, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return st.srv.ResumeWindow
	}
	if w := window("--memory"); w != server.DefaultResumeWindow {
		t.Errorf("resume window %d by default, want %d", w, server.DefaultResumeWindow)
	}
	if w := window("--memory", "--resume-window", "0"); w >= 0 {
		t.Errorf("--resume-window 0 gives server.Config.ResumeWindow %d, want negative (off)", w)
	}
	if l := settleArgs([]string{"--data-dir", t.TempDir()}, nil); l.SnapshotThreshold != 8192 || l.TrailingLogs != 10240 || l.SnapshotInterval != 30*time.Second {
		t.Errorf("--data-dir: log config %+v, want the disk defaults", l)
	}
}
