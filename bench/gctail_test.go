package bench

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestServeMainAnswersGC: the child answers each "gc?" line with figures
// the parent parses, and still stops at EOF.
func TestServeMainAnswersGC(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- ServeMain(context.Background(), ImplRelay, 0, "", inR, outW) }()
	lines := bufio.NewScanner(outR)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "PORT ") {
		t.Fatalf("first line %q", lines.Text())
	}
	for range 2 {
		if _, err := io.WriteString(inW, gcQuery+"\n"); err != nil {
			t.Fatal(err)
		}
		if !lines.Scan() {
			t.Fatal("no answer to gc?")
		}
		g, err := parseGCSample(strings.TrimPrefix(lines.Text(), gcReply))
		if err != nil || !strings.HasPrefix(lines.Text(), gcReply) || g.HeapGoal == 0 {
			t.Fatalf("answer %q: %+v, %v", lines.Text(), g, err)
		}
	}
	inW.Close()
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeMain: %v", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("ServeMain did not stop at EOF")
	}
}

// TestGCTailCase runs the gc-tail case at a tiny size in this process and
// checks that it measured what it reports.
func TestGCTailCase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := GCTailParams{Impls: gcImpls, Keys: 2000, TTLEvery: 10, Loaders: 2, Snapshots: 1,
		Quiet: 100 * time.Millisecond, Rate: 500, For: 500 * time.Millisecond, HighRate: 2000, HighFor: 300 * time.Millisecond}
	res, err := runGCTail(ctx, InProcessLauncher{}, p, NewProgress(io.Discard, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("%d results, want 2", len(res))
	}
	for _, r := range res {
		if r.Sent != 250 || r.P50 <= 0 || r.P999 < r.P50 || r.Snapshot <= 0 || r.SnapLost != 0 || r.HighSent <= 0 {
			t.Errorf("%s: %+v", r.Impl, r)
		}
	}
	rep := &Report{GCTail: res}
	var b strings.Builder
	rep.WriteText(&b)
	for _, want := range []string{"gc-tail: 2k keys", "latency p99.9", "RSS per key", "whole-map snapshot", "GC CPU at 2k/s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
