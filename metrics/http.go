package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPConfig configures the operations endpoints.
type HTTPConfig struct {
	// Gatherer is served at /metrics (a Metrics' Registry).
	Gatherer prometheus.Gatherer
	// Healthy backs /healthz: nil error = 200 "ok" (the process is up and
	// its sockets are bound), else 503 with the error. Nil: always healthy.
	Healthy func() error
	// Ready backs /readyz the same way: ready to serve clients (actors
	// running, not shutting down). Nil: always ready.
	Ready func() error
	// Pprof adds net/http/pprof under /debug/pprof/. Off by default: it
	// exposes internals and can cost CPU.
	Pprof bool
	// Logger receives errors of the metrics handler; default slog.Default().
	Logger *slog.Logger
}

// HTTPHandler returns the mux serving /metrics, /healthz, /readyz and, when
// asked, /debug/pprof/.
func HTTPHandler(cfg HTTPConfig) http.Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog: slogPrinter{log}, ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.Handle("GET /healthz", probe(cfg.Healthy))
	mux.Handle("GET /readyz", probe(cfg.Ready))
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func probe(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if check != nil {
			if err := check(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, err)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics", "err", fmt.Sprint(v...)) }

// HTTPServer is the operations listener: started by Listen, stopped by
// Shutdown, which waits for its goroutine.
type HTTPServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// Listen binds addr (host:port; port 0 picks one) and serves h on it.
func Listen(addr string, h http.Handler) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	s := &HTTPServer{
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// Shutdown stops accepting, lets requests in progress finish until ctx
// ends, and waits for the serving goroutine.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close() // ctx ended: cut the connections still open
	}
	if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	if err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}
