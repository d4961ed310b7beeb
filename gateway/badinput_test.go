package gateway_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clonekv/clonekv/gateway"
	"github.com/clonekv/clonekv/metrics"
)

// rawStatus sends req as it is on a new connection and returns the status
// line of the answer (so paths reach the server exactly as written).
func rawStatus(t testing.TB, addr, req string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("%q: no answer: %v", req, err)
	}
	return strings.TrimSpace(line)
}

func TestBadInputNeverTouchesTheMap(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{
		gateway: func(c *gateway.Config) { c.MaxBody = 64 << 10 },
		limits:  metrics.Limits{ReadHeaderTimeout: time.Second, MaxHeaderBytes: 8 << 10},
	})
	addr := strings.TrimPrefix(r.base, "http://")
	seq := r.put(t, "/b/ok", "ok") // the one write that is allowed

	t.Run("malformed JSON", func(t *testing.T) {
		for _, body := range []string{`{"value":`, `{"value":"v","extra":1}`, `{"value":"v"} trailing`, `{"value":"%%%","encoding":"base64"}`, `{"value":"v","encoding":"rot13"}`, `[]`, `{}`} {
			var e errBody
			code, raw := r.do(t, "PUT", "/v1/kv/b/json", "application/json", strings.NewReader(body), &e)
			if code != 400 || e.Code == "" {
				t.Errorf("body %q: %d %s, want 400 with a JSON error", body, code, raw)
			}
		}
	})

	t.Run("huge bodies", func(t *testing.T) {
		// A client announcing 1 GiB and writing as fast as it can: the
		// answer is 413 after the limit, and most of it is never read.
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(conn, "PUT /v1/kv/b/huge HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", 1<<30)
		var sent atomic.Int64
		go func() { // writes until the server stops reading and closes
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for sent.Load() < 1<<30 {
				n, err := conn.Write(chunk)
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.Contains(line, " 413 ") {
			t.Fatalf("huge body: %q %v, want 413", line, err)
		}
		// The same with a chunked body and JSON.
		var e errBody
		code, _ := r.do(t, "PUT", "/v1/kv/b/huge", "application/json", io.LimitReader(zeros{}, 8<<20), &e)
		if code != 413 || e.Code != "too_large" {
			t.Fatalf("huge JSON body: %d %+v", code, e)
		}
	})

	t.Run("path traversal", func(t *testing.T) {
		for _, path := range []string{"/v1/kv/b/../ok", "/v1/kv/b/%2e%2e/ok", "/v1/kv/./b/x", "/v1/kv/b/..", "/v1/kv?key=/b/../ok", "/v1/kv/b/%00x", "/v1/kv?key=a%0Db"} {
			req := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad", path)
			if line := rawStatus(t, addr, req); !strings.Contains(line, " 400 ") {
				t.Errorf("PUT %s: %q, want 400", path, line)
			}
		}
		for _, path := range []string{"/ui/../v1/kv/b/ok", "/ui/%2e%2e/metrics"} {
			req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
			if line := rawStatus(t, addr, req); !strings.Contains(line, " 400 ") && !strings.Contains(line, " 404 ") {
				t.Errorf("GET %s: %q, want 400 or 404", path, line)
			}
		}
	})

	t.Run("huge headers", func(t *testing.T) {
		req := "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("h", 64<<10) + "\r\nConnection: close\r\n\r\n"
		if line := rawStatus(t, addr, req); !strings.Contains(line, " 431 ") {
			t.Errorf("64 KiB header: %q, want 431", line)
		}
	})

	t.Run("slow headers", func(t *testing.T) {
		// slowloris: a header byte every 100ms. The server closes the
		// connection at its header timeout (1s here) without a 2xx, and
		// serves other clients meanwhile.
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		closed := make(chan string, 1)
		go func() { // the reader: what the server sends before it closes
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, _ := io.ReadAll(conn)
			closed <- string(b)
		}()
		head := "PUT /v1/kv/b/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Slow: " + strings.Repeat("s", 300)
	feed:
		for i := 0; i < len(head); i++ {
			if _, err := conn.Write([]byte{head[i]}); err != nil {
				break
			}
			select {
			case got := <-closed:
				closed <- got
				break feed
			case <-time.After(100 * time.Millisecond):
			}
			if i == 3 {
				if code, _ := r.do(t, "GET", "/v1/status", "", nil, nil); code != 200 {
					t.Errorf("status during slowloris: %d", code)
				}
			}
		}
		got := <-closed
		took := time.Since(start)
		if strings.Contains(got, " 200 ") || took > 20*time.Second {
			t.Fatalf("slow headers: connection ended after %v with %q", took, got)
		}
	})

	var st gateway.Status
	r.do(t, "GET", "/v1/status", "", nil, &st)
	var list gateway.List
	r.do(t, "GET", "/v1/kv/b/", "", nil, &list)
	if st.Seq != seq || len(list.Items) != 1 {
		t.Fatalf("bad input reached the map: seq %d (want %d), items %+v", st.Seq, seq, list.Items)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
