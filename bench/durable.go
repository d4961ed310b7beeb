package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// DurabilityParams are the knobs of the durability case (issue 12): the
// updates workload on the durable server, the in-memory one and the
// baseline in one run, and a restart of a loaded durable server.
type DurabilityParams struct {
	Updates UpdatesParams
	// Keys are loaded into each server for RSS per key and, on the durable
	// one, disk bytes per key and the restart time.
	Keys    int
	Loaders int
	Impls   []string
}

// DurabilityResult is one server's figures with Keys loaded.
type DurabilityResult struct {
	Impl        string  `json:"impl"`
	Keys        int     `json:"keys"`
	LoadRate    float64 `json:"load_rate"`
	RSSPerKey   float64 `json:"rss_per_key"`
	DiskPerKey  float64 `json:"disk_bytes_per_key,omitempty"` // allocated blocks of the data directory
	DiskBytes   int64   `json:"disk_bytes,omitempty"`
	Restart     Dur     `json:"restart_to_serving,omitempty"` // launch of the process to serving every key
	RestartKeys int     `json:"restart_keys,omitempty"`       // keys served after the restart
	Err         string  `json:"error,omitempty"`              // the measurement failed (a loaded machine)
}

// DurabilityReport is the durability case's output.
type DurabilityReport struct {
	Updates []UpdatesResult    `json:"updates"`
	Servers []DurabilityResult `json:"servers"`
	// Fsync is 4 KiB write + fsync latency on the temporary directory's
	// disk, measured in the same run: what the durable figures stand on.
	FsyncP50, FsyncP99 Dur
}

func runDurability(ctx context.Context, l Launcher, p DurabilityParams, prog *Progress) (*DurabilityReport, error) {
	rep := &DurabilityReport{}
	var err error
	prog.Step("durability: fsync latency")
	if rep.FsyncP50, rep.FsyncP99, err = fsyncLatency(200); err != nil {
		return rep, err
	}
	if rep.Updates, err = runUpdates(ctx, l, p.Updates, prog); err != nil {
		return rep, err
	}
	// The durable server first: its restart is the figure that matters. A
	// load that fails on a loaded machine is reported, not fatal.
	for i := len(p.Impls) - 1; i >= 0; i-- {
		res, err := durabilityOne(ctx, l, p, p.Impls[i], prog)
		if err != nil {
			if ctx.Err() != nil {
				return rep, err
			}
			res.Err = err.Error()
		}
		rep.Servers = append(rep.Servers, res)
	}
	return rep, nil
}

// fsyncLatency writes n 4 KiB blocks with an fsync each into a
// preallocated temporary file and returns the median and 99th percentile.
func fsyncLatency(n int) (p50, p99 Dur, err error) {
	f, err := os.CreateTemp("", "clonebench-fsync-")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(int64(n) * 4096); err != nil {
		return 0, 0, err
	}
	buf := make([]byte, 4096)
	h := NewHist()
	for i := range n {
		start := time.Now()
		if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
			return 0, 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, 0, err
		}
		h.Record(time.Since(start))
	}
	return Dur(h.Quantile(0.5)), Dur(h.Quantile(0.99)), nil
}

func durabilityOne(ctx context.Context, l Launcher, p DurabilityParams, impl string, prog *Progress) (res DurabilityResult, err error) {
	res = DurabilityResult{Impl: impl, Keys: p.Keys}
	launchAs := impl
	var dir string
	if impl == ImplDurable {
		if dir, err = os.MkdirTemp("", "clonebench-restart-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		launchAs = ImplDurable + "=" + dir
	}
	prog.Step("durability %s: loading %s keys", impl, si(float64(p.Keys)))
	t, err := l.Launch(ctx, launchAs)
	if err != nil {
		return res, err
	}
	zctx, err := newZctx(64)
	if err != nil {
		return res, errors.Join(err, t.Stop())
	}
	defer func() { err = errors.Join(err, zctx.Term()) }()
	idle, _ := ReadProc(t.PID)
	m := &mapRig{target: t, zctx: zctx, clk: newClock(), p: MapParams{Loaders: p.Loaders}, buckets: max(p.Keys/1000, 1)}
	lp, err := m.load(ctx, p.Keys)
	if err != nil {
		return res, errors.Join(err, t.Stop())
	}
	res.LoadRate = lp.Rate
	time.Sleep(time.Second) // let the server settle before reading RSS
	s, _ := ReadProc(t.PID)
	res.RSSPerKey = float64(s.RSS-idle.RSS) / float64(p.Keys)
	if err := t.Stop(); err != nil {
		return res, err
	}
	if dir == "" {
		return res, nil
	}
	res.DiskBytes = dirBytes(dir)
	res.DiskPerKey = float64(res.DiskBytes) / float64(p.Keys)
	prog.Step("durability %s: restart with %s keys", impl, si(float64(p.Keys)))
	start := time.Now()
	t, err = l.Launch(ctx, launchAs)
	if err != nil {
		return res, err
	}
	res.Restart = Dur(time.Since(start))
	j, err := fetchSnapshot(zctx, t.Port, "", 10*time.Second, time.Second, false)
	res.RestartKeys = j.Syncs
	return res, errors.Join(err, t.Stop())
}

// dirBytes is the disk space (allocated blocks) of the files under dir.
func dirBytes(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

// durabilityTables renders the case: durable | memory | baseline.
func durabilityTables(d *DurabilityReport) []Table {
	if d == nil {
		return nil
	}
	get := func(impl string) UpdatesResult {
		x, _ := find(d.Updates, func(x UpdatesResult) string { return x.Impl }, impl)
		return x
	}
	du, mu, bu := get(ImplDurable), get(ImplClonekv), get(ImplBaseline)
	t := Table{
		Title:  "durability: durable (raft-wal on disk) vs --memory (raft in memory) vs the seed-design baseline",
		Header: []string{"metric", "durable", "memory", "baseline", "durable/memory", "target"},
	}
	t.Rows = append(t.Rows, []string{fmt.Sprintf("zero-loss updates/s %v (median of %d)", du.Case, len(du.ZeroLoss)),
		si(du.ZeroLossMedian), si(mu.ZeroLossMedian), si(bu.ZeroLossMedian), ratio(du.ZeroLossMedian, mu.ZeroLossMedian),
		verdict("≥ 0.7× memory", du.ZeroLossMedian >= 0.7*mu.ZeroLossMedian)})
	for i, lp := range du.Latency {
		pick := func(x UpdatesResult) LatencyPoint {
			if i < len(x.Latency) {
				return x.Latency[i]
			}
			return LatencyPoint{}
		}
		ml, bl := pick(mu), pick(bu)
		t.Rows = append(t.Rows,
			[]string{fmt.Sprintf("latency at %s/s p50", si(lp.Rate)), lp.P50.String(), ml.P50.String(), bl.P50.String(), ratio(ms(lp.P50), ms(ml.P50)), ""},
			[]string{"  p99", lp.P99.String(), ml.P99.String(), bl.P99.String(), ratio(ms(lp.P99), ms(ml.P99)), verdict("durable < 3 ms", time.Duration(lp.P99) < 3*time.Millisecond)},
			[]string{"  p99.9 / lost", fmt.Sprintf("%v / %d", lp.P999, lp.Lost), fmt.Sprintf("%v / %d", ml.P999, ml.Lost), fmt.Sprintf("%v / %d", bl.P999, bl.Lost), ratio(ms(lp.P999), ms(ml.P999)), ""},
		)
	}
	srv := func(impl string) DurabilityResult {
		x, _ := find(d.Servers, func(x DurabilityResult) string { return x.Impl }, impl)
		return x
	}
	ds, ms_, bs := srv(ImplDurable), srv(ImplClonekv), srv(ImplBaseline)
	t.Rows = append(t.Rows,
		[]string{fmt.Sprintf("load of %s keys, keys/s", si(float64(ds.Keys))), si(ds.LoadRate), si(ms_.LoadRate), si(bs.LoadRate), ratio(ds.LoadRate, ms_.LoadRate), ""},
		[]string{"RSS per key (bytes)", fmt.Sprintf("%.0f", ds.RSSPerKey), fmt.Sprintf("%.0f", ms_.RSSPerKey), fmt.Sprintf("%.0f", bs.RSSPerKey), ratio(ds.RSSPerKey, ms_.RSSPerKey), ""},
		[]string{"disk bytes per key (data dir, allocated)", fmt.Sprintf("%.0f (%s)", ds.DiskPerKey, bytesName(ds.DiskBytes)), "–", "–", "", ""},
		[]string{"restart to serving", fmt.Sprintf("%v (%s keys back)", ds.Restart, si(float64(ds.RestartKeys))), "– (starts empty)", "– (starts empty)", "",
			verdict("< 2 s", ds.Restart > 0 && time.Duration(ds.Restart) < 2*time.Second && ds.RestartKeys >= ds.Keys)},
	)
	t.Notes = append(t.Notes,
		fmt.Sprintf("4 KiB write + fsync on this disk during the run: p50 %v, p99 %v (every durable commit waits for one)", d.FsyncP50, d.FsyncP99),
		"restart: process launch to serving, after a graceful stop (which snapshots the final state); raft-wal preallocates 64 MiB per log segment")
	for _, s := range d.Servers {
		if s.Err != "" {
			t.Notes = append(t.Notes, fmt.Sprintf("%s: %s", s.Impl, s.Err))
		}
	}
	return []Table{t}
}
