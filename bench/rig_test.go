package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

func TestReadProcSelf(t *testing.T) {
	s0, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until 30 ms of run time show (the machine is shared, so the
	// wall time this takes varies), for at most 3 s.
	var s1 ProcSample
	for start := time.Now(); s1.RunNanos-s0.RunNanos < 30*time.Millisecond; {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("3 s of spinning show as %v of run time", s1.RunNanos-s0.RunNanos)
		}
		for t0 := time.Now(); time.Since(t0) < 10*time.Millisecond; {
		}
		if s1, err = ReadProc(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if s1.RSS <= 0 || s1.HWM < s1.RSS {
		t.Errorf("RSS %d HWM %d", s1.RSS, s1.HWM)
	}
	if s1.CPU < s0.CPU {
		t.Errorf("CPU went backwards: %v → %v", s0.CPU, s1.CPU)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("ReadProc of a missing process succeeded")
	}
}

// TestSubscriberCountsGaps feeds a subscriber from a PUB the test owns:
// sequences 1, 2, 4 (one lost), 4 again (out of order), a HUGZ and a timed
// body, and checks the counters and the latency histogram.
func TestSubscriberCountsGaps(t *testing.T) {
	zctx, err := newZctx(0)
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	pub, err := transport.Bind(zctx, zmq.PUB, "tcp://127.0.0.1:*", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ep, _ := pub.GetLastEndpoint()
	port, _ := strconv.Atoi(ep[strings.LastIndexByte(ep, ':')+1:])
	clk := newClock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := startSubscriber(ctx, zctx, port-1, clk, []string{""}, nil)
	if err != nil {
		t.Fatal(err)
	}
	send := func(key string, seq int64, body []byte) {
		m := kvmsg.Msg{Key: []byte(key), Seq: seq, Body: body}
		if err := transport.SendMessage(pub, m.Frames(), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the subscription: send sequence 1 until it arrives.
	for deadline := time.Now().Add(5 * time.Second); sub.received.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("subscriber never received")
		}
		send("/a", 1, []byte("x"))
	}
	sub.takeHist()
	timed := make([]byte, 20)
	clk.stamp(timed)
	send(kvmsg.KeyHeartbeat, 0, nil)
	send("/a", 2, []byte("x"))
	send("/a", 4, []byte("x"))
	send("/a", 4, []byte("x"))
	send("/a", 5, timed)
	for deadline := time.Now().Add(5 * time.Second); sub.received.Load() < 5; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("received %d, want 5", sub.received.Load())
		}
	}
	h := sub.takeHist()
	if sub.lost.Load() != 1 || sub.disorder.Load() != 1 || h.Count() != 1 || h.Max() <= 0 {
		t.Errorf("lost %d disorder %d timed %d (max %v), want 1, 1, 1 (> 0)", sub.lost.Load(), sub.disorder.Load(), h.Count(), h.Max())
	}
	cancel()
	<-sub.done
}

// TestUpdatesTrial runs zero-loss trials against each server in process:
// a modest rate must arrive whole, with one latency sample per update.
func TestUpdatesTrial(t *testing.T) {
	ctx := context.Background()
	c := UpdatesCase{Pubs: 2, Subs: 2, Body: 32, Keys: 50}
	for _, impl := range []string{ImplClonekv, ImplBaseline, ImplRelay} {
		t.Run(impl, func(t *testing.T) {
			r, err := newRig(ctx, InProcessLauncher{}, impl, c.Subs, []string{""}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := r.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			if err := r.warmup(ctx, "/probe", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			// The machine is shared: a starved trial may fall short of its
			// rate, so up to three tries, and the last must be whole.
			var o trialOutcome
			for try := 0; try < 3; try++ {
				var err error
				if o, err = r.trial(ctx, c, makeKeys("/u/", c.Keys), 5000, 200*time.Millisecond); err != nil {
					t.Fatal(err)
				}
				if o.ok() {
					break
				}
				t.Logf("try %d: sent %d minRecv %d lost %d achieved %.0f", try, o.sent, o.minRecv, o.lost, o.achieved)
			}
			if !o.ok() || o.sent != 1000 || o.hist.Count() != uint64(2*o.sent) || o.hist.Quantile(0.5) <= 0 {
				t.Errorf("trial: sent %d minRecv %d lost %d achieved %.0f timed %d p50 %v", o.sent, o.minRecv, o.lost, o.achieved, o.hist.Count(), o.hist.Quantile(0.5))
			}
		})
	}
}

// TestMapRig loads keys into each map server and joins: clonekv must
// deliver every KVSYNC to concurrent joiners, and a subtree is exact.
func TestMapRig(t *testing.T) {
	ctx := context.Background()
	for _, impl := range []string{ImplClonekv, ImplBaseline} {
		t.Run(impl, func(t *testing.T) {
			tg, err := InProcessLauncher{}.Launch(ctx, impl)
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Stop()
			zctx, err := newZctx(0)
			if err != nil {
				t.Fatal(err)
			}
			defer zctx.Term()
			m := &mapRig{target: tg, zctx: zctx, clk: newClock(), buckets: 10,
				p: MapParams{Loaders: 3, FirstWait: 5 * time.Second, Idle: time.Second}}
			if _, err := m.load(ctx, 500); err != nil {
				t.Fatal(err)
			}
			if m.stored != 503 {
				t.Errorf("stored = %d, want 500 + 3 markers", m.stored)
			}
			sp, err := m.joins(2)
			if err != nil {
				t.Fatal(err)
			}
			// 500 keys fit under the ROUTER's high-water mark, so even the
			// unpaced baseline delivers them.
			if sp.Complete != 2 || sp.Lost != 0 || sp.Syncs[0] != 503 {
				t.Errorf("joins: %+v", sp)
			}
			j, err := fetchSnapshot(zctx, tg.Port, "/m/007/", time.Second, time.Second, true)
			if err != nil || !j.Complete || j.Syncs != 50 || len(j.Map) != 50 || j.Map["/m/007/0000017"] == "" {
				t.Errorf("subtree: %d keys, complete %v, err %v", j.Syncs, j.Complete, err)
			}
		})
	}
}

func TestServeMainStopsAtEOF(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	done := make(chan error, 1)
	go func() { done <- ServeMain(context.Background(), ImplRelay, 0, prof, inR, outW) }()
	line := make([]byte, 64)
	n, err := outR.Read(line)
	if err != nil || !bytes.HasPrefix(line[:n], []byte("PORT ")) {
		t.Fatalf("first output %q, err %v", line[:n], err)
	}
	inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeMain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeMain did not stop at EOF")
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Errorf("profile: %v", err)
	}
	if err := Serve(context.Background(), "nope", 0, func(int) {}); err == nil {
		t.Error("unknown impl served")
	}
}

// TestReportRenders checks that a report prints its tables with verdicts
// and writes JSON and a chart.
func TestReportRenders(t *testing.T) {
	c := UpdatesCase{Pubs: 1, Subs: 1, Body: 16, Keys: 10}
	lat := []LatencyPoint{{Fraction: 0.5, Rate: 5000, P50: Dur(time.Millisecond), P99: Dur(2 * time.Millisecond)}}
	rep := &Report{Suite: "test", Command: "clonebench --test", Machine: ThisMachine(), Started: time.Now(),
		Updates: []UpdatesResult{
			{Case: c, Impl: ImplBaseline, ZeroLoss: []float64{10000}, ZeroLossMedian: 10000, Latency: lat},
			{Case: c, Impl: ImplClonekv, ZeroLoss: []float64{20000}, ZeroLossMedian: 20000, Latency: lat},
			{Case: c, Impl: ImplRelay, ZeroLoss: []float64{40000}, ZeroLossMedian: 40000},
		},
		Map: []MapResult{
			{Impl: ImplClonekv, Keys: 1000, BytesPerKey: 150, Subtree: Dur(time.Millisecond), SubtreeKeys: 10, SubtreeSyncs: 10,
				TTL: &TTLResult{Quiet: Dur(time.Second), CPUPerTick: Dur(100 * time.Microsecond)}},
			{Impl: ImplBaseline, Keys: 1000, BytesPerKey: 400, TTL: &TTLResult{Quiet: Dur(time.Second)}},
		},
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	out := buf.String()
	for _, want := range []string{"libzmq", "zero-loss updates/s (median of 1)", "2.00×", "≥ 1.0× baseline: met",
		"clonekv = 50% of relay", "p99 ≤ baseline: met", "< 200 B: met", "< 1 ms: met", "< 5 ms: met"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	if err := rep.WriteJSON(filepath.Join(dir, "r.json")); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteChart(filepath.Join(dir, "r.html")); err != nil {
		t.Fatal(err)
	}
	j, _ := os.ReadFile(filepath.Join(dir, "r.json"))
	h, _ := os.ReadFile(filepath.Join(dir, "r.html"))
	if !bytes.Contains(j, []byte(`"zero_loss": 20000`)) || !bytes.Contains(h, []byte("<svg")) || !bytes.Contains(h, []byte("20k")) {
		t.Errorf("json or chart incomplete:\n%s", j)
	}
}
