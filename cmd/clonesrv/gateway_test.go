package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/internal/testkit"
)

// startClonesrv runs the clonesrv binary with args until the test ends and
// waits until its gateway has the server's first snapshot.
func startClonesrv(t *testing.T, args ...string) (base string, stderr *syncBuffer, cmd *exec.Cmd, exited chan error) {
	t.Helper()
	bin := buildServer(t)
	httpAddr := freeHTTPAddr(t)
	args = append([]string{"--bind", "127.0.0.1", "--port", fmt.Sprint(testkit.FreePorts(t)), "--http", httpAddr, "--data-dir", t.TempDir()}, args...)
	stderr = &syncBuffer{}
	cmd = exec.Command(bin, args...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		exited <- <-exited // the test may have taken the result already
	})
	base = "http://" + httpAddr
	testkit.WaitFor(t, 20*time.Second, 20*time.Millisecond, "the gateway's first snapshot", func() bool {
		code, body, err := get(base + "/v1/status")
		return err == nil && code == 200 && strings.Contains(body, `"synced":true`)
	})
	return base, stderr, cmd, exited
}

func httpDo(t *testing.T, method, url, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := http.Client{Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, b, err)
	}
	return resp.StatusCode, out
}

// TestGatewayInClonesrv: the gateway on clonesrv's --http listener with a
// token file; writes need the token; on SIGTERM a watch stream gets a
// final event and the process exits cleanly.
func TestGatewayInClonesrv(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokFile, []byte("0123456789abcdef0123\n"), 0o600)
	base, stderr, cmd, exited := startClonesrv(t, "--http-token-file", tokFile)

	if code, out := httpDo(t, "PUT", base+"/v1/kv/app/x", "v1"); code != 401 {
		t.Fatalf("PUT without the token: %d %v", code, out)
	}
	code, out := httpDo(t, "PUT", base+"/v1/kv/app/x?ttl=60s", "v1", "Authorization", "Bearer 0123456789abcdef0123")
	if code != 200 || out["seq"].(float64) < 1 {
		t.Fatalf("PUT with the token: %d %v", code, out)
	}
	if code, out := httpDo(t, "GET", base+"/v1/kv/app/", ""); code != 200 || len(out["items"].([]any)) != 1 {
		t.Fatalf("GET: %d %v", code, out)
	}
	if code, _, err := get(base + "/ui/"); err != nil || code != 200 {
		t.Fatalf("/ui/: %d %v", code, err)
	}
	if code, _, err := get(base + "/metrics"); err != nil || code != 200 {
		t.Fatalf("/metrics beside the gateway: %d %v", code, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/watch?prefix=/app/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readUntil := func(want string) string {
		var seen bytes.Buffer
		for {
			line, err := br.ReadString('\n')
			seen.WriteString(line)
			if strings.HasPrefix(line, want) {
				return seen.String()
			}
			if err != nil {
				t.Fatalf("stream ended before %q: %v\n%s", want, err, seen.String())
			}
		}
	}
	readUntil("event: synced")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	readUntil("event: closed")
	if data := readUntil("data: "); !strings.Contains(data, "shutting down") {
		t.Fatalf("final event on shutdown: %q", data)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15 s after SIGTERM\n%s", stderr.String())
	}
}

// TestGatewayWithCurve: with CURVE and an allow list, the gateway's own
// client is admitted (a key made for the run), and HTTP writes are off
// unless a token file is given.
func TestGatewayWithCurve(t *testing.T) {
	dir := t.TempDir()
	if _, err := config.WriteKeyPair(dir, "server"); err != nil {
		t.Fatal(err)
	}
	if _, err := config.WriteKeyPair(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	allow := filepath.Join(dir, "allow")
	os.Mkdir(allow, 0o755)
	pub, _ := os.ReadFile(filepath.Join(dir, "alice.pub"))
	os.WriteFile(filepath.Join(allow, "alice.pub"), pub, 0o644)
	curve := []string{"--curve-secret-key-file", filepath.Join(dir, "server.key"), "--curve-allow", allow}

	base, stderr, _, _ := startClonesrv(t, curve...)
	code, out := httpDo(t, "PUT", base+"/v1/kv/a", "v")
	if code != 403 || out["code"] != "read_only" {
		t.Fatalf("PUT under CURVE without a token: %d %v", code, out)
	}
	if !strings.Contains(stderr.String(), "--http-token-file") {
		t.Errorf("no warning that HTTP writes are off:\n%s", stderr.String())
	}

	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte("a-long-enough-token"), 0o600)
	base, _, _, _ = startClonesrv(t, append(curve, "--http-token-file", tokFile)...)
	if code, out := httpDo(t, "PUT", base+"/v1/kv/a", "v", "Authorization", "Bearer a-long-enough-token"); code != 200 {
		t.Fatalf("PUT under CURVE with the token: %d %v", code, out)
	}
	if code, out := httpDo(t, "GET", base+"/v1/kv/a?exact=1", ""); code != 200 || out["item"].(map[string]any)["value"] != "v" {
		t.Fatalf("GET under CURVE: %d %v", code, out)
	}
}

func TestGatewayFlagErrors(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokFile, []byte("short"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-token-file", tokFile}, "needs the --http listener"},
		{[]string{"--http-read-only"}, "needs the --http listener"},
		{[]string{"--http", "127.0.0.1:0", "--http-token-file", tokFile}, "at least 16 characters"},
		{[]string{"--http", "127.0.0.1:0", "--http-token-file", tokFile + ".missing"}, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(append(c.args, "--print-config"), nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
}

func TestGatewayEndpoint(t *testing.T) {
	for bind, want := range map[string]string{
		"*": "tcp://127.0.0.1:7000", "0.0.0.0": "tcp://127.0.0.1:7000", "127.0.0.1": "tcp://127.0.0.1:7000",
		"10.1.2.3": "tcp://10.1.2.3:7000", "::": "tcp://[::1]:7000", "::1": "tcp://[::1]:7000",
	} {
		if got := gatewayEndpoint(bind, 7000); got != want {
			t.Errorf("bind %q: %q, want %q", bind, got, want)
		}
	}
}
