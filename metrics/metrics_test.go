package metrics

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	dto "github.com/prometheus/client_model/go"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// startServer runs a server with metrics and the HTTP endpoints on
// 127.0.0.1 until the test ends.
func startServer(t *testing.T, cfg server.Config) (*server.Server, string) {
	t.Helper()
	m := New()
	cfg.Bind = "127.0.0.1"
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Handlers = append(cfg.Handlers, m.Handler())
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Watch(srv); err != nil {
		t.Fatal(err)
	}
	hs, err := Listen("127.0.0.1:0", HTTPHandler(HTTPConfig{Gatherer: m.Registry}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop in 15s")
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := hs.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	})
	select {
	case <-srv.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready in 10s")
	}
	return srv, "http://" + hs.Addr()
}

func connect(t *testing.T, zctx *zmq.Context, typ zmq.Type, port int, opts transport.Options) *zmq.Socket {
	t.Helper()
	s, err := transport.Connect(zctx, typ, fmt.Sprintf("tcp://127.0.0.1:%d", port), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func send(t *testing.T, s *zmq.Socket, frames [][]byte) {
	t.Helper()
	if err := transport.SendMessage(s, frames, 0); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsMatchScriptedWorkload: after 1,000 accepted updates (990 sets,
// 3 of them with a ttl, 10 deletes), 3 rejected ones, 3 expiries and 2
// snapshots, /metrics reports exactly that, from both the stats collector
// and the Committed handler.
func TestMetricsMatchScriptedWorkload(t *testing.T) {
	srv, base := startServer(t, server.Config{Heartbeat: -1})
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zctx.Term() })
	connect(t, zctx, zmq.SUB, srv.Port()+1, transport.Options{Subscribe: []string{"nothing-matches"}}) // one subscriber
	push := connect(t, zctx, zmq.PUSH, srv.Port()+2, transport.Options{})
	dealer := connect(t, zctx, zmq.DEALER, srv.Port(), transport.Options{})

	for i := range 1000 {
		var m kvmsg.Msg
		switch {
		case i < 987: // 987 sets over k/000..k/099
			m = kvmsg.Msg{Key: fmt.Appendf(nil, "k/%03d", i%100), Body: fmt.Appendf(nil, "v%d", i)}
		case i < 990: // 3 sets with a ttl of 1 s
			m = kvmsg.Msg{Key: fmt.Appendf(nil, "t/%d", i), Body: []byte("brief")}.SetProp("ttl", "1")
		default: // 10 deletes: k/000..k/009
			m = kvmsg.Msg{Key: fmt.Appendf(nil, "k/%03d", i-990)}
		}
		send(t, push, m.Frames())
		switch i {
		case 100:
			send(t, push, m.Frames()[:4]) // rejected: frame_count
		case 200:
			send(t, push, kvmsg.Msg{Key: []byte(strings.Repeat("x", 256)), Body: []byte("v")}.Frames()) // key_too_long
		case 300:
			send(t, push, kvmsg.Msg{Key: []byte("k/bad"), Body: []byte("v")}.SetProp("ttl", "soon").Frames()) // ttl
		}
	}
	// The three ttl keys expire about 1 s later: 1,003 sequence numbers.
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().Sequence.Load() != 1003 {
		if time.Now().After(deadline) {
			t.Fatalf("sequence %d, want 1003 (accepted %d, rejected %d)", srv.Stats().Sequence.Load(),
				srv.Stats().UpdatesAccepted.Load(), srv.Stats().RejectedTotal(""))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 2 {
		send(t, dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("k/")})
		n := 0
		for {
			if err := dealer.SetRcvtimeo(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			f, _, err := transport.RecvMessage(dealer, 0, nil)
			if err != nil {
				t.Fatalf("snapshot after %d keys: %v", n, err)
			}
			if string(f[0]) == kvmsg.KeySnapshotEnd {
				break
			}
			n++
		}
		if n != 90 {
			t.Fatalf("snapshot of k/ has %d keys, want 90", n)
		}
	}
	// A resume request from 1,000: the three expiries.
	send(t, dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), nil, []byte("history=" + srv.History() + "\nsince=1000\n")})
	for n := 0; ; n++ {
		f, _, err := transport.RecvMessage(dealer, 0, nil)
		if err != nil {
			t.Fatalf("resume reply after %d messages: %v", n, err)
		}
		if string(f[0]) == kvmsg.KeySnapshotEnd {
			if n != 3 {
				t.Fatalf("resume from 1000 sent %d messages (KTHXBAI %q), want the 3 expiries", n, f[3])
			}
			break
		}
	}

	// Handlers and counters settle asynchronously; wait for the last of
	// them, then compare one scrape exactly.
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); ; {
		fams = testkit.ScrapeMetrics(t, base)
		if testkit.MetricValue(fams, "clonekv_committed_last_sequence") == 1003 && testkit.MetricValue(fams, "clonekv_updates_published_total") == 1003 &&
			testkit.MetricValue(fams, "clonekv_snapshots_served_total") == 3 && testkit.MetricValue(fams, "clonekv_connections", "socket=publisher") == 1 &&
			testkit.MetricValue(fams, "clonekv_expiry_backlog") == 0 {
			break
		}
		if time.Now().After(deadline) {
			break // the table below says which one is off
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"clonekv_updates_accepted_total", nil, 1000},
		{"clonekv_updates_published_total", nil, 1003},
		{"clonekv_updates_rejected_total", []string{"reason=frame_count", "source=collector"}, 1},
		{"clonekv_updates_rejected_total", []string{"reason=key_too_long", "source=collector"}, 1},
		{"clonekv_updates_rejected_total", []string{"reason=ttl", "source=collector"}, 1},
		{"clonekv_expirations_total", nil, 3},
		{"clonekv_expiries_proposed_total", nil, 3},
		{"clonekv_expiry_index_keys", nil, 0},
		{"clonekv_expiry_backlog", nil, 0},
		{"clonekv_expiry_rate_limit", nil, 20000},
		{"clonekv_heartbeats_sent_total", nil, 0},
		{"clonekv_sequence", nil, 1003},
		{"clonekv_keys", nil, 90},
		{"clonekv_snapshots_served_total", nil, 3},
		{"clonekv_snapshot_keys_total", nil, 183},
		{"clonekv_snapshot_duration_seconds", nil, 3},
		{"clonekv_resumes_total", []string{"reason=", "result=delta"}, 1},
		{"clonekv_resume_messages_total", []string{"result=delta"}, 3},
		{"clonekv_resume_window_sequences", nil, 1003},
		{"clonekv_resume_window_bytes", nil, float64(srv.Stats().ResumeWindowBytes.Load())},
		{"clonekv_snapshots_aborted_total", nil, 0},
		{"clonekv_snapshot_streams_in_flight", nil, 0},
		{"clonekv_store_mailbox_batches", nil, 0},
		{"clonekv_connections", []string{"socket=publisher"}, 1},
		{"clonekv_connections", []string{"socket=collector"}, 1},
		{"clonekv_connections", []string{"socket=snapshot"}, 1},
		{"clonekv_committed_updates_total", []string{"kind=set"}, 990},
		{"clonekv_committed_updates_total", []string{"kind=delete"}, 10},
		{"clonekv_committed_updates_total", []string{"kind=expire"}, 3},
		{"clonekv_committed_last_sequence", nil, 1003},
	} {
		if got := testkit.MetricValue(fams, w.name, w.labels...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	if n := len(fams["clonekv_updates_rejected_total"].GetMetric()); n != 3 {
		t.Errorf("%d reject series, want 3", n)
	}
	if b := testkit.MetricValue(fams, "clonekv_resume_window_bytes"); b < 1003*32 || b > 1003*64 {
		t.Errorf("resume window of 1003 small updates: %v bytes", b)
	}
	if s := testkit.MetricValue(fams, "clonekv_resume_window_seconds"); s <= 0 || s > 60 {
		t.Errorf("resume window spans %v s", s)
	}
	if b := testkit.MetricValue(fams, "clonekv_resume_bytes_total", "result=delta"); b <= 0 {
		t.Errorf("resume bytes %v", b)
	}
	if testkit.MetricValue(fams, "go_goroutines") <= 0 {
		t.Error("no Go runtime metrics")
	}
}

// TestHTTPEndpoints: the probes follow their checks and pprof is only
// there when asked for.
func TestHTTPEndpoints(t *testing.T) {
	notReady := fmt.Errorf("shutting down")
	for _, tc := range []struct {
		pprof      bool
		ready      error
		path       string
		wantStatus int
		wantBody   string
	}{
		{false, nil, "/healthz", 200, "ok"},
		{false, nil, "/readyz", 200, "ok"},
		{false, notReady, "/readyz", 503, "shutting down"},
		{false, notReady, "/healthz", 200, "ok"},
		{false, nil, "/metrics", 200, "clonekv_committed_batches_total 0"},
		{false, nil, "/debug/pprof/", 404, ""},
		{true, nil, "/debug/pprof/", 200, "goroutine"},
	} {
		t.Run(fmt.Sprintf("%s pprof=%v ready=%v", tc.path, tc.pprof, tc.ready), func(t *testing.T) {
			m := New()
			ready := tc.ready
			hs, err := Listen("127.0.0.1:0", HTTPHandler(HTTPConfig{
				Gatherer: m.Registry, Pprof: tc.pprof, Ready: func() error { return ready },
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer hs.Shutdown(context.Background())
			c := http.Client{Timeout: 5 * time.Second}
			resp, err := c.Get("http://" + hs.Addr() + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("GET %s: %d %q, want %d containing %q", tc.path, resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

type stuckHandler struct{ gate chan struct{} }

func (h stuckHandler) OnCommit(actors.Batch) { <-h.gate }

type panickyHandler struct{}

func (panickyHandler) OnCommit(actors.Batch) { panic("always") }

// TestHandlerSeries: a handler that is stuck and one that panics show up
// in /metrics as drops, lag, busy time and panics under their names, while
// the metrics handler itself keeps up.
func TestHandlerSeries(t *testing.T) {
	gate := make(chan struct{})
	srv, base := startServer(t, server.Config{Heartbeat: -1, Handlers: []server.Handler{
		{Name: "stuck", Handler: stuckHandler{gate}, Queue: 1},
		{Name: "panicky", Handler: panickyHandler{}},
	}})
	t.Cleanup(func() { close(gate) }) // before the server's stop
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zctx.Term() })
	push := connect(t, zctx, zmq.PUSH, srv.Port()+2, transport.Options{})
	for i := range 50 { // one batch each: wait for each to be committed
		send(t, push, kvmsg.Msg{Key: fmt.Appendf(nil, "h/%d", i), Body: []byte("v")}.Frames())
		for deadline := time.Now().Add(10 * time.Second); srv.Stats().Sequence.Load() != int64(i+1); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("update %d not committed", i)
			}
		}
	}
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		fams = testkit.ScrapeMetrics(t, base)
		if testkit.MetricValue(fams, "clonekv_committed_last_sequence") == 50 &&
			testkit.MetricValue(fams, "clonekv_handler_handled_updates_total", "handler=panicky") == 50 &&
			testkit.MetricValue(fams, "clonekv_handler_dropped_updates_total", "handler=stuck") > 0 {
			break
		}
	}
	for _, w := range []struct {
		name, handler string
		ok            func(float64) bool
		want          string
	}{
		{"clonekv_handler_dropped_updates_total", "stuck", func(v float64) bool { return v > 0 && v < 50 }, "some, not all"},
		{"clonekv_handler_lag_sequences", "stuck", func(v float64) bool { return v == 50 }, "50"},
		{"clonekv_handler_busy_seconds", "stuck", func(v float64) bool { return v > 0 }, "> 0"},
		{"clonekv_handler_queued_batches", "stuck", func(v float64) bool { return v == 1 }, "1"},
		{"clonekv_handler_panics_total", "panicky", func(v float64) bool { return v > 0 }, "> 0"},
		{"clonekv_handler_dropped_updates_total", "metrics", func(v float64) bool { return v == 0 }, "0"},
		{"clonekv_handler_lag_sequences", "metrics", func(v float64) bool { return v == 0 }, "0"},
		{"clonekv_handler_panics_total", "metrics", func(v float64) bool { return v == 0 }, "0"},
	} {
		if v := testkit.MetricValue(fams, w.name, "handler="+w.handler); !w.ok(v) {
			t.Errorf("%s{handler=%q} = %v, want %s", w.name, w.handler, v, w.want)
		}
	}
}
