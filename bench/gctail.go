package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

// GCTailParams are the knobs of the gc-tail case (issue 16): the update
// latency tail with a big map held, at the default GC setting and with the
// GC off, plus the memory, snapshot time and GC CPU that go with it.
type GCTailParams struct {
	Impls     []string // ImplClonekv, ImplClonekvGCOff
	Keys      int      // keys held (16-byte bodies and UUIDs)
	TTLEvery  int      // one key in TTLEvery gets a (long) ttl
	Loaders   int      // PUSH sockets loading keys in parallel
	Snapshots int      // whole-map joins timed (median reported)
	Quiet     time.Duration
	Rate      float64       // timed updates/s, one PUSH to one SUB
	For       time.Duration // how long they run
	HighRate  float64       // updates/s for the busy GC CPU figure
	HighFor   time.Duration
}

// GCTailResult is one server's run of the gc-tail case.
type GCTailResult struct {
	Impl        string  `json:"impl"`
	Keys        int     `json:"keys"`
	Load        Dur     `json:"load"`
	IdleRSS     int64   `json:"idle_rss"`
	LoadedRSS   int64   `json:"loaded_rss"`
	BytesPerKey float64 `json:"bytes_per_key"`
	HeapLive    uint64  `json:"heap_live"` // after loading, as the last GC marked it
	Snapshots   []Dur   `json:"snapshots"`
	Snapshot    Dur     `json:"snapshot_median"`
	SnapLost    int     `json:"snapshot_lost"`

	Rate     float64 `json:"rate"` // timed updates/s asked
	Sent     int     `json:"sent"`
	P50      Dur     `json:"p50"`
	P99      Dur     `json:"p99"`
	P999     Dur     `json:"p999"`
	Max      Dur     `json:"max"`
	Lost     int64   `json:"lost"`
	LatGC    uint64  `json:"latency_gc_cycles"` // collections during the timed run
	LatGCCPU Dur     `json:"latency_gc_cpu"`
	LatCPU   Dur     `json:"latency_cpu"` // server CPU over the timed run

	Quiet      Dur     `json:"quiet"`
	IdleGCCPU  Dur     `json:"idle_gc_cpu"` // GC CPU over Quiet, nothing sent
	IdleCPU    Dur     `json:"idle_cpu"`
	HighRate   float64 `json:"high_rate"`   // asked
	HighSent   float64 `json:"high_sent_s"` // achieved updates/s
	HighFor    Dur     `json:"high_for"`
	HighGCCPU  Dur     `json:"high_gc_cpu"`
	HighCPU    Dur     `json:"high_cpu"`
	HighCycles uint64  `json:"high_gc_cycles"`
}

// runGCTail runs the case on each implementation in turn.
func runGCTail(ctx context.Context, l Launcher, p GCTailParams, prog *Progress) ([]GCTailResult, error) {
	var out []GCTailResult
	for _, impl := range p.Impls {
		r, err := gcTailOne(ctx, l, p, impl, prog)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func gcTailKey(i int) []byte { return fmt.Appendf(nil, "/g/%07d", i) }

func gcTailOne(ctx context.Context, l Launcher, p GCTailParams, impl string, prog *Progress) (res GCTailResult, err error) {
	res = GCTailResult{Impl: impl, Keys: p.Keys, Rate: p.Rate, HighRate: p.HighRate, Quiet: Dur(p.Quiet), HighFor: Dur(p.HighFor)}
	prog.Step("%s: starting", impl)
	r, err := newRig(ctx, l, impl, 0, nil, nil) // the subscriber starts after loading
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, r.Close()) }()
	time.Sleep(300 * time.Millisecond)
	idle := r.proc()
	res.IdleRSS = idle.RSS

	// Load: 16-byte bodies and UUIDs, one key in TTLEvery with a ttl of a
	// day (so that none expires during the run), from p.Loaders PUSHes.
	prog.Step("%s: loading %s keys", impl, si(float64(p.Keys)))
	uuid := make([]byte, kvmsg.UUIDLen)
	_, _ = rand.Read(uuid)
	specs := make([]pubSpec, p.Loaders+1)
	for i := range p.Keys {
		s := &specs[p.Loaders]
		if i%p.TTLEvery != 0 {
			s = &specs[i%p.Loaders]
		}
		s.Keys = append(s.Keys, gcTailKey(i))
	}
	for i := range specs {
		specs[i].Body, specs[i].N, specs[i].UUID = 16, len(specs[i].Keys), uuid
		specs[i].Marker = fmt.Appendf(nil, "/done/gc/%d", i)
		if i == p.Loaders {
			specs[i].Props = []byte("ttl=86400\n")
		}
		if len(specs[i].Keys) == 0 {
			specs[i].Keys, specs[i].N = [][]byte{gcTailKey(0)}, 1
		}
	}
	start := time.Now()
	if _, _, err := publishAll(ctx, r.zctx, r.target.Port, specs, r.clk); err != nil {
		return res, fmt.Errorf("%s: load: %w", impl, err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; {
		j, err := fetchSnapshot(r.zctx, r.target.Port, "/done/gc/", 10*time.Second, time.Second, false)
		if err != nil {
			return res, err
		}
		if j.Complete && j.Syncs == len(specs) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return res, fmt.Errorf("%s: %d keys not stored after 3 min", impl, p.Keys)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.Load = Dur(time.Since(start))
	time.Sleep(time.Second) // let the server settle before reading RSS
	loaded := r.proc()
	res.LoadedRSS = loaded.RSS
	res.BytesPerKey = float64(loaded.RSS-idle.RSS) / float64(p.Keys)
	if g, err := r.target.GC(); err == nil {
		res.HeapLive = g.HeapLive
	}

	stored := p.Keys + len(specs)
	var snaps []time.Duration
	for run := range p.Snapshots {
		prog.Step("%s: whole-map snapshot %d", impl, run+1)
		j, err := fetchSnapshot(r.zctx, r.target.Port, "", 20*time.Second, 2*time.Second, false)
		if err != nil {
			return res, err
		}
		snaps = append(snaps, j.Done)
		res.Snapshots = append(res.Snapshots, Dur(j.Done))
		res.SnapLost = max(res.SnapLost, stored-j.Syncs)
	}
	res.Snapshot = Dur(medianDur(snaps))

	prog.Step("%s: idle GC CPU over %v", impl, p.Quiet)
	g0, c0, err := r.gcAndCPU()
	if err != nil {
		return res, err
	}
	time.Sleep(p.Quiet)
	g1, c1, err := r.gcAndCPU()
	if err != nil {
		return res, err
	}
	res.IdleGCCPU, res.IdleCPU = gcDur(g1.GCCPU-g0.GCCPU), Dur(c1-c0)

	// Timed updates overwrite keys spread over the whole map (so the map's
	// garbage and compaction are part of what is measured). The subscriber
	// follows every key the case writes, so a sequence gap is a real loss.
	sub, err := startSubscriber(r.ctx, r.zctx, r.target.Port, r.clk, []string{"/g/", "/done/gc/"}, nil)
	if err != nil {
		return res, err
	}
	r.subs = append(r.subs, sub)
	if err := r.warmup(ctx, "/g/probe", 10*time.Second); err != nil {
		return res, err
	}
	spread := make([][]byte, 0, min(p.Keys, 100_000))
	for i := range cap(spread) {
		spread = append(spread, gcTailKey(i*(p.Keys/cap(spread))))
	}
	prog.Step("%s: updates at %s/s for %v", impl, si(p.Rate), p.For)
	r.takeHists()
	before, lostBefore := r.counts()
	g0, c0, err = r.gcAndCPU()
	if err != nil {
		return res, err
	}
	n := int(p.Rate * p.For.Seconds())
	pr, err := publish(ctx, r.zctx, r.target.Port, pubSpec{Keys: spread, Body: minBody, N: n, Rate: p.Rate, Timed: true}, r.clk)
	if err != nil {
		return res, err
	}
	rec, lost := r.waitDelivered(before, lostBefore, int64(pr.Sent), 300*time.Millisecond, 5*time.Second)
	g1, c1, err = r.gcAndCPU()
	if err != nil {
		return res, err
	}
	h := r.takeHists()
	res.Sent = pr.Sent
	res.P50, res.P99, res.P999, res.Max = Dur(h.Quantile(0.5)), Dur(h.Quantile(0.99)), Dur(h.Quantile(0.999)), Dur(h.Max())
	res.Lost = lost + max(int64(pr.Sent)-rec[0], 0)
	res.LatGC, res.LatGCCPU, res.LatCPU = g1.Cycles-g0.Cycles, gcDur(g1.GCCPU-g0.GCCPU), Dur(c1-c0)

	prog.Step("%s: updates at %s/s for %v (GC CPU)", impl, si(p.HighRate), p.HighFor)
	g0, c0, err = r.gcAndCPU()
	if err != nil {
		return res, err
	}
	nh := int(p.HighRate * p.HighFor.Seconds())
	hr, err := publish(ctx, r.zctx, r.target.Port, pubSpec{Keys: spread, Body: 16, N: nh, Rate: p.HighRate}, r.clk)
	if err != nil {
		return res, err
	}
	r.waitDelivered(before, lostBefore, int64(pr.Sent+hr.Sent), 300*time.Millisecond, 5*time.Second)
	g1, c1, err = r.gcAndCPU()
	if err != nil {
		return res, err
	}
	res.HighSent = float64(hr.Sent) / hr.Elapsed.Seconds()
	res.HighGCCPU, res.HighCPU, res.HighCycles = gcDur(g1.GCCPU-g0.GCCPU), Dur(c1-c0), g1.Cycles-g0.Cycles
	return res, nil
}

func gcDur(seconds float64) Dur { return Dur(time.Duration(seconds * float64(time.Second))) }

// gcAndCPU samples the server's GC figures and its process CPU together.
func (r *rig) gcAndCPU() (GCSample, time.Duration, error) {
	g, err := r.target.GC()
	if err != nil {
		return g, 0, err
	}
	return g, r.proc().CPU, nil
}

func gcTailTable(k, off GCTailResult) Table {
	share := func(gc, cpu Dur) string {
		if cpu <= 0 {
			return "–"
		}
		return fmt.Sprintf("%s of server CPU (%v)", pct(float64(gc)/float64(cpu)), gc)
	}
	per := func(d Dur, over time.Duration) string {
		if over <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f%% of a core", 100*float64(d)/float64(over))
	}
	highFor := time.Duration(k.HighFor)
	return Table{
		Title: fmt.Sprintf("gc-tail: %s keys held (16 B bodies, 1 in 10 with a ttl); updates at %s/s, one PUSH → one SUB; default GC vs --gc-percent -1",
			si(float64(k.Keys)), si(k.Rate)),
		Header: []string{"metric", "default GC", "GC off", "ratio", "target"},
		Rows: [][]string{
			{"latency p50", k.P50.String(), off.P50.String(), ratio(ms(k.P50), ms(off.P50)), ""},
			{"latency p99", k.P99.String(), off.P99.String(), ratio(ms(k.P99), ms(off.P99)), ""},
			{"latency p99.9", k.P999.String(), off.P999.String(), ratio(ms(k.P999), ms(off.P999)),
				verdict("≤ 1.5× GC off", off.P999 > 0 && float64(k.P999) <= 1.5*float64(off.P999))},
			{"latency max / lost", fmt.Sprintf("%v / %d", k.Max, k.Lost), fmt.Sprintf("%v / %d", off.Max, off.Lost), ratio(ms(k.Max), ms(off.Max)), ""},
			{"GC cycles / GC CPU during the run", fmt.Sprintf("%d / %v", k.LatGC, k.LatGCCPU), fmt.Sprintf("%d / %v", off.LatGC, off.LatGCCPU), "", ""},
			{"RSS per key (loaded − idle)", fmt.Sprintf("%.0f B", k.BytesPerKey), fmt.Sprintf("%.0f B", off.BytesPerKey), ratio(k.BytesPerKey, off.BytesPerKey),
				verdict("≤ 100 B (default GC)", k.BytesPerKey <= 100)},
			{"live heap after load", bytesName(int64(k.HeapLive)), bytesName(int64(off.HeapLive)), "", ""},
			{fmt.Sprintf("whole-map snapshot (median of %d) / lost", len(k.Snapshots)), fmt.Sprintf("%v / %d", k.Snapshot, k.SnapLost),
				fmt.Sprintf("%v / %d", off.Snapshot, off.SnapLost), ratio(ms(k.Snapshot), ms(off.Snapshot)), verdict("≤ 0.5 s", k.Snapshot > 0 && time.Duration(k.Snapshot) <= 500*time.Millisecond)},
			{fmt.Sprintf("GC CPU idle (over %v)", k.Quiet), per(k.IdleGCCPU, time.Duration(k.Quiet)), per(off.IdleGCCPU, time.Duration(off.Quiet)), "", ""},
			{fmt.Sprintf("GC CPU at %s/s asked (%s/s sent)", si(k.HighRate), si(k.HighSent)), share(k.HighGCCPU, k.HighCPU) + ", " + per(k.HighGCCPU, highFor),
				share(off.HighGCCPU, off.HighCPU), "", fmt.Sprintf("%d cycles", k.HighCycles)},
		},
	}
}
