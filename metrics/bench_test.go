package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// BenchmarkUpdates measures end-to-end update throughput (PUSH → server →
// SUB, 64-byte values over 10,000 keys) for a plain server, one with the
// metrics handler and collector, and one with CURVE too: what metrics and
// encryption cost. Run with a fixed count, e.g.
//
//	go test -run '^$' -bench Updates -benchtime 200000x -count 5 ./metrics/
func BenchmarkUpdates(b *testing.B) {
	for _, v := range []struct {
		name           string
		metrics, curve bool
	}{{"plain", false, false}, {"metrics", true, false}, {"metrics+curve", true, true}} {
		b.Run(v.name, func(b *testing.B) { benchUpdates(b, v.metrics, v.curve) })
	}
}

func benchUpdates(b *testing.B, withMetrics, curve bool) {
	// Deep queues: this measures throughput, not the slow-subscriber policy.
	cfg := server.Config{Bind: "127.0.0.1", Heartbeat: -1, PubHWM: 1 << 20, Logger: slog.New(slog.DiscardHandler)}
	var cc *transport.CurveClient
	if curve {
		spub, ssec, _ := zmq.NewCurveKeypair()
		cpub, csec, _ := zmq.NewCurveKeypair()
		cfg.Curve = &server.CurveConfig{SecretKey: ssec, AllowedClients: []string{cpub}}
		cc = &transport.CurveClient{ServerKey: spub, PublicKey: cpub, SecretKey: csec}
	}
	var m *Metrics
	if withMetrics {
		m = New()
		cfg.Handlers = append(cfg.Handlers, m.Handler())
	}
	srv, err := server.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if m != nil {
		if err := m.Watch(srv); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-srv.Ready()

	zctx, _ := zmq.NewContext()
	defer zctx.Term()
	ep := func(off int) string { return fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port()+off) }
	push, err := transport.Connect(zctx, zmq.PUSH, ep(2), transport.Options{CurveClient: cc})
	if err != nil {
		b.Fatal(err)
	}
	defer push.Close()
	sub, err := transport.Connect(zctx, zmq.SUB, ep(1), transport.Options{CurveClient: cc, Subscribe: []string{""}, RcvHWM: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	// Subscribed: one update round trip (test goroutine owns both sockets
	// until the receiver starts).
	sub.SetRcvtimeo(100 * time.Millisecond)
	for start := time.Now(); ; {
		transport.SendMessage(push, kvmsg.Msg{Key: []byte("warm"), Body: []byte("x")}.Frames(), 0)
		if f, _, err := transport.RecvMessage(sub, 0, nil); err == nil && string(f[0]) == "warm" {
			break
		}
		if time.Since(start) > 10*time.Second {
			b.Fatal("subscriber never received")
		}
	}
	for { // drain extra warm-ups
		sub.SetRcvtimeo(50 * time.Millisecond)
		if _, _, err := transport.RecvMessage(sub, 0, nil); err != nil {
			break
		}
	}
	sub.SetRcvtimeo(10 * time.Second)
	body := make([]byte, 64)
	b.ResetTimer()
	got := make(chan int, 1)
	go func() { // the receiver owns sub from here
		defer sub.Close()
		n := 0
		for n < b.N {
			if _, _, err := transport.RecvMessage(sub, 0, nil); err != nil {
				break
			}
			n++
		}
		got <- n
	}()
	for i := 0; i < b.N; i++ {
		if err := transport.SendMessage(push, kvmsg.Msg{Key: fmt.Appendf(nil, "k/%05d", i%10000), Body: body}.Frames(), 0); err != nil {
			b.Fatal(err)
		}
	}
	if n := <-got; n != b.N {
		b.Fatalf("received %d of %d", n, b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}

// BenchmarkScrape measures one /metrics gather of a server's registry.
func BenchmarkScrape(b *testing.B) {
	m := New()
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Handlers: []server.Handler{m.Handler()}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	m.Watch(srv)
	for b.Loop() {
		if _, err := m.Registry.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
