package metrics

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
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
	// Mounts are extra handlers (the HTTP gateway) served beside the
	// operations endpoints.
	Mounts []Mount
}

// Mount sends every request whose path starts with Prefix to Handler as it
// came: before the mux's path cleaning and redirects, so that Handler sees
// (and can refuse) paths such as /v1/kv/a/../b itself.
type Mount struct {
	Prefix  string
	Handler http.Handler
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
	if len(cfg.Mounts) == 0 {
		return mux
	}
	mounts := cfg.Mounts
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range mounts {
			if strings.HasPrefix(r.URL.Path, m.Prefix) {
				m.Handler.ServeHTTP(w, r)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
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

// Limits bound the listener's connections. Zero fields take the defaults
// of DefaultLimits. There is no server-wide write timeout: streams (SSE,
// pprof profiles) set their own per-write deadlines.
type Limits struct {
	ReadHeaderTimeout time.Duration // the whole request head (slowloris)
	ReadTimeout       time.Duration // head and body of a request; 0: none (handlers bound their bodies)
	IdleTimeout       time.Duration // a keep-alive connection between requests
	MaxHeaderBytes    int
	MaxConns          int // connections open at once; more wait to be accepted
}

// DefaultLimits are Listen's.
var DefaultLimits = Limits{
	ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second,
	MaxHeaderBytes: 16 << 10, MaxConns: 1024,
}

// Listen binds addr (host:port; port 0 picks one) and serves h on it with
// DefaultLimits.
func Listen(addr string, h http.Handler) (*HTTPServer, error) {
	return ListenWith(addr, h, DefaultLimits)
}

// ListenWith is Listen with other limits.
func ListenWith(addr string, h http.Handler, lim Limits) (*HTTPServer, error) {
	d := DefaultLimits
	lim.ReadHeaderTimeout = cmp.Or(lim.ReadHeaderTimeout, d.ReadHeaderTimeout)
	lim.IdleTimeout = cmp.Or(lim.IdleTimeout, d.IdleTimeout)
	lim.MaxHeaderBytes = cmp.Or(lim.MaxHeaderBytes, d.MaxHeaderBytes)
	lim.MaxConns = cmp.Or(lim.MaxConns, d.MaxConns)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	s := &HTTPServer{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: lim.ReadHeaderTimeout, ReadTimeout: lim.ReadTimeout,
			IdleTimeout: lim.IdleTimeout, MaxHeaderBytes: lim.MaxHeaderBytes},
		ln:   &limitListener{Listener: ln, slots: make(chan struct{}, lim.MaxConns)},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// RegisterOnShutdown runs f when Shutdown starts (a stream handler ends
// its streams then, instead of holding Shutdown until its deadline).
func (s *HTTPServer) RegisterOnShutdown(f func()) { s.srv.RegisterOnShutdown(f) }

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

// limitListener holds at most cap(slots) accepted connections open; Accept
// waits for a slot first, so further clients wait in the kernel's backlog.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
}

type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
