package reliability

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/clonekv/clonekv/server"
)

// helperEnv, when set, makes the test binary run a server instead of the
// tests (see TestMain): the soak runs the server in its own process so its
// RSS is the server's alone, and this server also logs its goroutine count,
// which clonesrv does not expose. Its value is the sampling interval.
const helperEnv = "CLONEKV_RELIABILITY_SERVER"

// runHelperServer serves on 127.0.0.1 and a free port triple until SIGTERM,
// logging JSON to stderr: "clonekv server listening" (as clonesrv) and a
// "sample" record (rss, goroutines, heap, sequence) every interval.
func runHelperServer() int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	every, err := time.ParseDuration(os.Getenv(helperEnv))
	if err != nil || every <= 0 {
		every = 10 * time.Second
	}
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Logger: log, PubHWM: 10000})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-srv.Ready()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			rss, _ := procStatus(0, "VmRSS")
			st := srv.Stats()
			log.Info("sample", "rss", rss, "goroutines", runtime.NumGoroutine(), "heap", ms.HeapAlloc,
				"sequence", st.Sequence.Load(), "keys", st.Keys.Load(), "streams", st.StreamsInFlight.Load())
		}
	}()
	if err := srv.Run(ctx); err != nil {
		log.Error("server failed", "err", err)
		return 1
	}
	return 0
}
