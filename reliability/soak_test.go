//go:build soak

package reliability

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clonekv/clonekv/client"
)

// soakDurations: how long to load (SOAK, default 5m) and how often the
// server samples itself (SOAK_SAMPLE, default 10s).
func soakDurations(t *testing.T) (dur, every time.Duration) {
	dur, every = 5*time.Minute, 10*time.Second
	if v := os.Getenv("SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK=%q: want a duration such as 5m or 30m", v)
		}
		dur = d
	}
	if v := os.Getenv("SOAK_SAMPLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK_SAMPLE=%q: want a duration", v)
		}
		every = d
	}
	return dur, every
}

// TestSoak runs a server process (this test binary in server mode, so it
// can report its goroutines) under mixed load for SOAK: updates with and
// without ttls and deletes at 2,000/s; clonekv clients and raw replicas
// following the whole map; one replica that pauses 3s every 20s and one
// client process stopped (SIGSTOP) 3s every 30s; snapshot joins that read
// all, part or none of their snapshot; clients that join and leave. The
// server samples RSS and goroutines every SOAK_SAMPLE. Afterwards every
// follower's map must equal the server's, and RSS and goroutines after
// warm-up must not grow by more than 10%.
func TestSoak(t *testing.T) {
	dur, every := soakDurations(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+every.String())
	p := startProc(t, cmd)
	port := p.port
	zctx := newContext(t, 256)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()

	var fs []follower
	for i := range 3 {
		fs = append(fs, clientFollower(i, dialClient(t, port, 3*time.Second)))
	}
	rctx, rcancel := context.WithCancel(context.Background()) // outlives the load
	defer rcancel()
	var replicas []*replica
	for i := range 3 {
		r := startReplica(rctx, zctx, port, 3*time.Second, 0)
		replicas = append(replicas, r)
		fs = append(fs, replicaFollower(i, r))
	}
	cp := startClientProc(t, port)
	fs = append(fs, cp.follower("client process"))

	ld := startLoader(zctx, port, 2000, func(i int64) [][]byte {
		key := fmt.Sprintf("/soak/%05d", (i*7919)%5000)
		switch {
		case i%20 == 5:
			return setMsg(key, nil)
		case i%10 == 0:
			return setMsg(key, []byte(strings.Repeat("t", 32)), "ttl", fmt.Sprint(1+i%3))
		}
		return setMsg(key, []byte(strings.Repeat("v", 32+int(i%224))))
	})

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	loop := func(period time.Duration, fn func(n int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(period)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := fn(n); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var churned, joined, paused, stopped int
	var mu sync.Mutex
	count := func(c *int) { mu.Lock(); *c++; mu.Unlock() }
	// Snapshot joins that read all, part or none of their snapshot.
	loop(100*time.Millisecond, func(n int) error {
		if _, err := oneCycleSubtree(zctx, port, n%3, "/soak/"); err != nil {
			return fmt.Errorf("join cycle %d: %w", n, err)
		}
		count(&churned)
		return nil
	})
	// Clients that join, follow for a while and leave.
	loop(2*time.Second, func(n int) error {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		c, err := client.Dial(dctx, client.Options{Endpoints: []string{endpoint(port, 0)}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("short-lived client %d: %w", n, err)
		}
		time.Sleep(time.Second)
		count(&joined)
		return c.Close()
	})
	// A replica that stops reading for 3s every 20s.
	loop(20*time.Second, func(int) error {
		resume, _, err := replicas[0].Pause(5 * time.Second)
		if err != nil {
			return err
		}
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
		}
		resume()
		count(&paused)
		return nil
	})
	// A client process stopped for 3s every 30s.
	loop(30*time.Second, func(int) error {
		cp.cmd.Process.Signal(syscall.SIGSTOP)
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
		}
		cp.cmd.Process.Signal(syscall.SIGCONT)
		count(&stopped)
		return nil
	})

	select {
	case <-time.After(dur):
	case err := <-errs:
		t.Error(err)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ld.halt(t)
	// Let the last ttls (3s at most) expire and their deletes reach everyone.
	time.Sleep(4 * time.Second)
	took := converge(t, zctx, port, fs, 60*time.Second, "after the soak")

	samples := soakSamples(p)
	t.Logf("soak %v: %d updates sent, %d snapshot join cycles, %d short-lived clients, %d replica pauses, %d client process stops; %d followers converged %v after the load stopped",
		time.Since(start).Round(time.Second), ld.sent.Load(), churned, joined, paused, stopped, len(fs), took.Round(time.Millisecond))
	var b strings.Builder
	fmt.Fprintf(&b, "\n%8s %9s %11s %9s %10s %6s %8s\n", "elapsed", "rss_MiB", "goroutines", "heap_MiB", "sequence", "keys", "streams")
	for _, s := range samples {
		fmt.Fprintf(&b, "%8s %9.1f %11d %9.1f %10d %6d %8d\n", s.at.Round(time.Second), float64(s.rss)/mib, s.goroutines,
			float64(s.heap)/mib, s.seq, s.keys, s.streams)
	}
	t.Log(b.String())

	warm := min(time.Minute, dur/3).Round(time.Second)
	var post []soakSample
	for _, s := range samples {
		if s.at >= warm && s.at <= dur {
			post = append(post, s)
		}
	}
	if len(post) < 4 {
		t.Fatalf("only %d samples after the %v warm-up; run longer (SOAK) or sample more often (SOAK_SAMPLE)", len(post), warm)
	}
	k := max(1, len(post)/4)
	first, last := post[:k], post[len(post)-k:]
	rssGrowth := mean(last, func(s soakSample) float64 { return float64(s.rss) })/mean(first, func(s soakSample) float64 { return float64(s.rss) }) - 1
	g0, g1 := mean(first, func(s soakSample) float64 { return float64(s.goroutines) }), mean(last, func(s soakSample) float64 { return float64(s.goroutines) })
	t.Logf("after a %v warm-up: RSS grew %.1f%%, goroutines %.1f -> %.1f (first and last %d samples)", warm, 100*rssGrowth, g0, g1, k)
	if rssGrowth > 0.10 {
		t.Errorf("server RSS grew %.1f%% after warm-up (limit 10%%)", 100*rssGrowth)
	}
	// A goroutine is a mailbox that happens to be busy: allow 2 of noise.
	if g1 > g0*1.10 && g1 > g0+2 {
		t.Errorf("server goroutines grew from %.1f to %.1f after warm-up (limit 10%%)", g0, g1)
	}
}

type soakSample struct {
	at                   time.Duration
	rss, heap, seq, keys int64
	goroutines           int
	streams              int64
}

// soakSamples reads the helper server's "sample" log records.
func soakSamples(p *proc) []soakSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []soakSample
	var t0 time.Time
	for _, rec := range p.lines {
		if rec["msg"] != "sample" {
			continue
		}
		ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"]))
		if t0.IsZero() {
			t0 = ts
		}
		out = append(out, soakSample{at: ts.Sub(t0), rss: num(rec, "rss"), heap: num(rec, "heap"), seq: num(rec, "sequence"),
			keys: num(rec, "keys"), goroutines: int(num(rec, "goroutines")), streams: num(rec, "streams")})
	}
	// Times are from the first sample; shift by one interval so the first
	// reads as when it was taken after start.
	if len(out) > 1 {
		d := out[1].at - out[0].at
		for i := range out {
			out[i].at += d
		}
	}
	return out
}

func mean(ss []soakSample, f func(soakSample) float64) float64 {
	var sum float64
	for _, s := range ss {
		sum += f(s)
	}
	if len(ss) == 0 {
		return math.NaN()
	}
	return sum / float64(len(ss))
}
