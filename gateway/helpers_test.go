package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/gateway"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/metrics"
	"github.com/clonekv/clonekv/server"
)

// rig is a real server on 127.0.0.1, a gateway following it over ZeroMQ,
// and the HTTP listener serving the gateway as clonesrv does.
type rig struct {
	srv  *server.Server
	gw   *gateway.Gateway
	hs   *metrics.HTTPServer
	ep   string // the server's endpoint, for clients
	base string // http://127.0.0.1:port
}

type rigOptions struct {
	gateway func(*gateway.Config)
	limits  metrics.Limits
	server  func(*server.Config)
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	scfg := server.Config{Bind: "127.0.0.1", Logger: testkit.Logger(slog.LevelWarn)}
	if o.server != nil {
		o.server(&scfg)
	}
	srv, err := server.New(scfg)
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	testkit.Serve(t, srv, 15*time.Second)
	r := &rig{srv: srv, ep: fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port())}
	gcfg := gateway.Config{Endpoint: r.ep, Logger: testkit.Logger(slog.LevelWarn), Subscribers: func() int { return 0 }}
	if o.gateway != nil {
		o.gateway(&gcfg)
	}
	if r.gw, err = gateway.New(gcfg); err != nil {
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(func() { r.gw.Close() })
	h := metrics.HTTPHandler(metrics.HTTPConfig{
		Gatherer: metrics.New().Registry, Logger: testkit.Logger(slog.LevelWarn),
		Mounts: []metrics.Mount{{Prefix: "/v1/", Handler: r.gw.Handler()}, {Prefix: "/ui", Handler: r.gw.Handler()}},
	})
	if r.hs, err = metrics.ListenWith("127.0.0.1:0", h, o.limits); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.gw.Shutdown(ctx); err != nil {
			t.Errorf("gateway shutdown: %v", err)
		}
		if err := r.hs.Shutdown(ctx); err != nil {
			t.Errorf("http shutdown: %v", err)
		}
	})
	r.base = "http://" + r.hs.Addr()
	testkit.WaitFor(t, 20*time.Second, 10*time.Millisecond, "the gateway's first snapshot", func() bool {
		var st gateway.Status
		code, _ := r.do(t, "GET", "/v1/status", "", nil, &st)
		return code == 200 && st.Synced
	})
	return r
}

// do sends a request and decodes a JSON answer into out (when not nil);
// it returns the status code and the raw body.
func (r *rig) do(t testing.TB, method, path, contentType string, body io.Reader, out any, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	if out != nil && len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: answer %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, string(b)
}

// put sets key (a path after /v1/kv) to value and returns the sequence.
func (r *rig) put(t testing.TB, path, value string) int64 {
	t.Helper()
	var w gateway.Written
	code, body := r.do(t, "PUT", "/v1/kv"+path, "text/plain", strings.NewReader(value), &w)
	if code != 200 {
		t.Fatalf("PUT %s: %d %s", path, code, body)
	}
	return w.Seq
}

// dial is a separate clonekv client of the rig's server.
func (r *rig) dial(t testing.TB, subtree string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{Endpoints: []string{r.ep}, Subtree: subtree, Logger: testkit.Logger(slog.LevelWarn)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name  string
	id    string
	hasID bool
	data  string
}

// put/delete payload as the tests read it.
type evData struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Encoding string `json:"encoding"`
	Seq      int64  `json:"seq"`
	TTL      int64  `json:"ttl"`
	Resumed  bool   `json:"resumed"`
	Keys     int    `json:"keys"`
	Reason   string `json:"reason"`
}

func (e sseEvent) decode(t testing.TB) evData {
	t.Helper()
	var d evData
	if err := json.Unmarshal([]byte(e.data), &d); err != nil {
		t.Fatalf("event %s data %q: %v", e.name, e.data, err)
	}
	return d
}

// stream is an open /v1/watch: a goroutine parses it into events (its
// owner: it ends when the body ends), the test reads them with next.
type stream struct {
	resp     *http.Response
	cancel   context.CancelFunc
	events   chan sseEvent
	comments chan string
	done     chan error
}

func (r *rig) watch(t testing.TB, query string, lastID string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", r.base+"/v1/watch"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("watch: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &stream{resp: resp, cancel: cancel, events: make(chan sseEvent, 1<<16), comments: make(chan string, 64), done: make(chan error, 1)}
	go func() { s.done <- parseSSE(resp.Body, s.events, s.comments) }()
	t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// parseSSE reads events per the text/event-stream format until the body
// ends. It closes events at the end.
func parseSSE(body io.Reader, events chan<- sseEvent, comments chan<- string) error {
	defer close(events)
	br := bufio.NewReader(body)
	var ev sseEvent
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.name != "" || len(data) > 0 {
				ev.data = strings.Join(data, "\n")
				events <- ev
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			select {
			case comments <- line:
			default:
			}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.name = value
			case "id":
				ev.id, ev.hasID = value, true
			case "data":
				data = append(data, value)
			}
		}
	}
}

// next returns the next event within d, failing the test otherwise.
func (s *stream) next(t testing.TB, d time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatalf("stream ended: %v", <-s.done)
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return sseEvent{}
}

// untilSynced reads the start of a stream (reset, the snapshot's puts,
// synced) and returns the snapshot as key → value and the synced event.
func (s *stream) untilSynced(t testing.TB) (map[string]string, sseEvent) {
	t.Helper()
	m := map[string]string{}
	for {
		ev := s.next(t, 20*time.Second)
		switch ev.name {
		case "reset":
			clear(m)
		case "put":
			d := ev.decode(t)
			m[d.Key] = d.Value
		case "delete":
			delete(m, ev.decode(t).Key)
		case "synced":
			return m, ev
		default:
			t.Fatalf("unexpected event %+v before synced", ev)
		}
	}
}
