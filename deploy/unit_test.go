package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unit reads clonesrv.service into section -> key -> values.
func unit(t *testing.T) (map[string]map[string][]string, string) {
	t.Helper()
	data, err := os.ReadFile("clonesrv.service")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("bad unit line %q", line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out, string(data)
}

// TestUnitPolicy: what the service must do, checked without systemd.
func TestUnitPolicy(t *testing.T) {
	u, _ := unit(t)
	svc := u["Service"]
	one := func(k string) string {
		if len(svc[k]) != 1 {
			t.Fatalf("[Service] %s: %q, want exactly one", k, svc[k])
		}
		return svc[k][0]
	}
	if r := one("Restart"); r != "on-failure" {
		t.Errorf("Restart=%s, want on-failure", r)
	}
	if user := one("User"); user == "" || user == "root" || user == "0" {
		t.Errorf("User=%q, want a dedicated user", user)
	}
	if n, err := strconv.Atoi(one("LimitNOFILE")); err != nil || n < 16384 {
		t.Errorf("LimitNOFILE=%s, want >= 16384 (thousands of clients, three connections each)", one("LimitNOFILE"))
	}
	exe := strings.Fields(one("ExecStart"))
	if exe[0] != "/usr/local/bin/clonesrv" {
		t.Errorf("ExecStart runs %s, want /usr/local/bin/clonesrv (make install's default PREFIX)", exe[0])
	}
	if !strings.Contains(one("ExecStart"), "--config /etc/clonekv/clonekv.toml") {
		t.Errorf("ExecStart does not read /etc/clonekv/clonekv.toml")
	}
	if one("KillSignal") != "SIGTERM" {
		t.Error("KillSignal: clonesrv stops gracefully on SIGTERM")
	}
	// The stop timeout covers the drain bound plus the hurried stop after
	// it (actors, PUB linger, HTTP listener: 5 s is ample).
	drain := ""
	for i, a := range exe {
		if a == "--shutdown-timeout" && i+1 < len(exe) {
			drain = exe[i+1]
		}
	}
	if d, err := time.ParseDuration(drain); err != nil {
		t.Errorf("ExecStart sets no --shutdown-timeout (%q): the stop timeout must match the drain bound", drain)
	} else if stopAfter, err := time.ParseDuration(one("TimeoutStopSec")); err != nil || stopAfter < d+5*time.Second {
		t.Errorf("TimeoutStopSec=%s, want at least --shutdown-timeout %v + 5s", one("TimeoutStopSec"), d)
	}
	if len(u["Install"]["WantedBy"]) == 0 {
		t.Error("no [Install] WantedBy")
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit (with ExecStart
// pointed at a stand-in executable, since clonesrv is not installed here).
func TestUnitVerifies(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: the unit file is not verified here (TestUnitPolicy still checks it)")
	}
	_, text := unit(t)
	dir := t.TempDir()
	stub := filepath.Join(dir, "clonesrv")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "clonesrv.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "/usr/local/bin/clonesrv", stub)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
