package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// Table is one printed table.
type Table struct {
	Title  string
	Header []string
	Rows   [][]string
	Notes  []string
}

// row columns: metric, clonekv, baseline, ratio, relay (updates), target.
func ratio(a, b float64) string {
	if b == 0 || a == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func verdict(desc string, ok bool) string {
	if ok {
		return desc + ": met"
	}
	return desc + ": MISSED"
}

func find[T any](xs []T, impl func(T) string, name string) (T, bool) {
	for _, x := range xs {
		if impl(x) == name {
			return x, true
		}
	}
	var zero T
	return zero, false
}

func ms(d Dur) float64 { return float64(d) / float64(time.Millisecond) }

// Tables renders the report.
func (r *Report) Tables() []Table {
	var ts []Table
	cases := map[UpdatesCase]bool{}
	for _, u := range r.Updates {
		if cases[u.Case] {
			continue
		}
		cases[u.Case] = true
		get := func(impl string) UpdatesResult {
			x, _ := find(r.Updates, func(x UpdatesResult) string {
				if x.Case != u.Case {
					return ""
				}
				return x.Impl
			}, impl)
			return x
		}
		k, b, rl := get(ImplClonekv), get(ImplBaseline), get(ImplRelay)
		t := Table{
			Title:  fmt.Sprintf("updates %v, %d keys (updates/s over all publishers; latency PUSH send → SUB receive)", u.Case, u.Case.Keys),
			Header: []string{"metric", "clonekv", "baseline", "ratio", "relay", "target"},
		}
		runs := func(x UpdatesResult) string {
			var s []string
			for _, v := range x.ZeroLoss {
				s = append(s, si(v))
			}
			return strings.Join(s, " ")
		}
		share := "–"
		if rl.ZeroLossMedian > 0 {
			share = fmt.Sprintf("clonekv = %.0f%% of relay", 100*k.ZeroLossMedian/rl.ZeroLossMedian)
		}
		t.Rows = append(t.Rows,
			[]string{fmt.Sprintf("zero-loss updates/s (median of %d)", len(k.ZeroLoss)), si(k.ZeroLossMedian), si(b.ZeroLossMedian),
				ratio(k.ZeroLossMedian, b.ZeroLossMedian), si(rl.ZeroLossMedian), verdict("≥ 1.0× baseline", k.ZeroLossMedian >= b.ZeroLossMedian)},
			[]string{"  runs", runs(k), runs(b), "", runs(rl), share},
			[]string{"unbounded: taken by server /s", si(k.UnboundedSent), si(b.UnboundedSent), ratio(k.UnboundedSent, b.UnboundedSent), si(rl.UnboundedSent), ""},
			[]string{"unbounded: delivered /s per sub", si(k.UnboundedDeliv), si(b.UnboundedDeliv), ratio(k.UnboundedDeliv, b.UnboundedDeliv), si(rl.UnboundedDeliv), ""},
			[]string{"unbounded: loss", pct(k.UnboundedLoss), pct(b.UnboundedLoss), "", pct(rl.UnboundedLoss), ""},
		)
		for i, lp := range k.Latency {
			var bl, rlp LatencyPoint
			if i < len(b.Latency) {
				bl = b.Latency[i]
			}
			if i < len(rl.Latency) {
				rlp = rl.Latency[i]
			}
			name := fmt.Sprintf("latency at %s/s (%.0f%% of baseline max)", si(lp.Rate), 100*lp.Fraction)
			tgt := ""
			if lp.Fraction == 0.5 {
				tgt = verdict("p99 ≤ baseline", lp.P99 <= bl.P99)
			}
			t.Rows = append(t.Rows,
				[]string{name + " p50", lp.P50.String(), bl.P50.String(), ratio(ms(lp.P50), ms(bl.P50)), rlp.P50.String(), ""},
				[]string{"  p99", lp.P99.String(), bl.P99.String(), ratio(ms(lp.P99), ms(bl.P99)), rlp.P99.String(), tgt},
				[]string{"  p99.9 / lost", fmt.Sprintf("%v / %d", lp.P999, lp.Lost), fmt.Sprintf("%v / %d", bl.P999, bl.Lost),
					ratio(ms(lp.P999), ms(bl.P999)), fmt.Sprintf("%v / %d", rlp.P999, rlp.Lost), ""},
			)
		}
		t.Rows = append(t.Rows, []string{"server CPU / peak RSS", fmt.Sprintf("%v / %s", k.CPU, bytesName(k.PeakRSS)),
			fmt.Sprintf("%v / %s", b.CPU, bytesName(b.PeakRSS)), "", fmt.Sprintf("%v / %s", rl.CPU, bytesName(rl.PeakRSS)), ""})
		ts = append(ts, t)
	}
	if k, ok := find(r.Map, func(x MapResult) string { return x.Impl }, ImplClonekv); ok {
		b, _ := find(r.Map, func(x MapResult) string { return x.Impl }, ImplBaseline)
		ts = append(ts, snapshotTable(k, b), memoryTable(k, b))
		if k.TTL != nil && b.TTL != nil {
			ts = append(ts, ttlTable(*k.TTL, *b.TTL))
		}
	}
	if k, ok := find(r.JoinLoad, func(x JoinLoadResult) string { return x.Impl }, ImplClonekv); ok {
		b, _ := find(r.JoinLoad, func(x JoinLoadResult) string { return x.Impl }, ImplBaseline)
		ts = append(ts, Table{
			Title:  fmt.Sprintf("join-under-load: %d joiners while %d updates stream over %d keys", k.Joiners, k.Updates, k.FinalKeys),
			Header: []string{"metric", "clonekv", "baseline", "ratio", "target"},
			Rows: [][]string{
				{"joiners whose map = final snapshot", frac(k.Equal, k.Joiners), frac(b.Equal, b.Joiners), "", verdict("all", k.Equal == k.Joiners)},
				{"snapshots ended by KTHXBAI", frac(k.Complete, k.Joiners), frac(b.Complete, b.Joiners), "", ""},
				{"KVSYNCs lost (all joiners)", fmt.Sprint(k.SnapLost), fmt.Sprint(b.SnapLost), "", ""},
				{"updates missed after snapshot", fmt.Sprint(k.Gaps), fmt.Sprint(b.Gaps), "", ""},
			},
		})
	}
	if k, ok := find(r.Fanout, func(x FanoutResult) string { return x.Impl }, ImplClonekv); ok {
		b, _ := find(r.Fanout, func(x FanoutResult) string { return x.Impl }, ImplBaseline)
		ts = append(ts, Table{
			Title:  fmt.Sprintf("fanout: %d subscribers, %d updates at %s/s", k.Subs, k.N, si(k.Rate)),
			Header: []string{"metric", "clonekv", "baseline", "ratio", "target"},
			Rows: [][]string{
				{"subscribers with every update", frac(k.Complete, k.Subs), frac(b.Complete, b.Subs), "", verdict("all", k.Complete == k.Subs)},
				{"deliveries lost", fmt.Sprint(k.Lost), fmt.Sprint(b.Lost), "", ""},
				{"latency p50", k.P50.String(), b.P50.String(), ratio(ms(k.P50), ms(b.P50)), ""},
				{"latency p99", k.P99.String(), b.P99.String(), ratio(ms(k.P99), ms(b.P99)), ""},
				{"latency p99.9 / max", fmt.Sprintf("%v / %v", k.P999, k.Max), fmt.Sprintf("%v / %v", b.P999, b.Max), ratio(ms(k.P999), ms(b.P999)), ""},
				{"server CPU while sending", k.CPU.String(), b.CPU.String(), ratio(ms(k.CPU), ms(b.CPU)), ""},
				{"all subscribers connected in", k.Connect.String(), b.Connect.String(), "", ""},
			},
		})
	}
	if k, ok := find(r.GCTail, func(x GCTailResult) string { return x.Impl }, ImplClonekv); ok {
		off, _ := find(r.GCTail, func(x GCTailResult) string { return x.Impl }, ImplClonekvGCOff)
		ts = append(ts, gcTailTable(k, off))
	}
	ts = append(ts, durabilityTables(r.Durable)...)
	ts = append(ts, resumeTables(r.Resume)...)
	return append(ts, clusterTables(r.Cluster)...)
}

func snapshotTable(k, b MapResult) Table {
	t := Table{
		Title:  "snapshot: whole map and a subtree (joiner = DEALER with default options; time = ICANHAZ? → KTHXBAI)",
		Header: []string{"metric", "clonekv", "baseline", "ratio", "target"},
	}
	big := k.Keys
	for i, sp := range k.Snapshots {
		var bs SnapshotPoint
		if i < len(b.Snapshots) {
			bs = b.Snapshots[i]
		}
		if sp.Keys >= big && len(k.Single) > 0 {
			t.Rows = append(t.Rows,
				[]string{fmt.Sprintf("%s keys, 1 joiner (median of %d)", si(float64(big)), len(k.Single)), k.SingleMedian.String(), b.SingleMedian.String(),
					ratio(ms(k.SingleMedian), ms(b.SingleMedian)), verdict("< 1.5 s, no loss", time.Duration(k.SingleMedian) < 1500*time.Millisecond && k.SingleLost == 0)},
				[]string{"  KVSYNCs lost (worst run)", fmt.Sprint(k.SingleLost), fmt.Sprintf("%d (%s)", b.SingleLost, pct(float64(b.SingleLost)/float64(max(b.Keys, 1)))), "", ""},
			)
		}
		name := fmt.Sprintf("%s keys, %d joiners: slowest", si(float64(sp.Keys)), sp.Joiners)
		tgt := ""
		if sp.Keys >= big {
			tgt = verdict("all complete ≤ 5 s", sp.Complete == sp.Joiners && time.Duration(sp.DoneMax) <= 5*time.Second && sp.Lost == 0)
		}
		t.Rows = append(t.Rows,
			[]string{name, sp.DoneMax.String(), bs.DoneMax.String(), ratio(ms(sp.DoneMax), ms(bs.DoneMax)), tgt},
			[]string{"  complete / KVSYNCs lost", fmt.Sprintf("%s / %d", frac(sp.Complete, sp.Joiners), sp.Lost), fmt.Sprintf("%s / %d", frac(bs.Complete, bs.Joiners), bs.Lost), "", ""},
			[]string{"  longest wait for first KVSYNC", sp.FirstMax.String(), bs.FirstMax.String(), ratio(ms(sp.FirstMax), ms(bs.FirstMax)),
				map[bool]string{true: verdict("≤ 1 s", time.Duration(sp.FirstMax) <= time.Second), false: ""}[sp.Keys >= big]},
			[]string{"  KVSYNCs/s (all joiners)", si(sp.KeysPerSec), si(bs.KeysPerSec), ratio(sp.KeysPerSec, bs.KeysPerSec), ""},
		)
	}
	t.Rows = append(t.Rows, []string{fmt.Sprintf("subtree of %d keys out of %s (median of 5)", k.SubtreeKeys, si(float64(big))),
		k.Subtree.String(), b.Subtree.String(), ratio(ms(k.Subtree), ms(b.Subtree)),
		verdict("< 5 ms", time.Duration(k.Subtree) < 5*time.Millisecond && k.SubtreeSyncs == k.SubtreeKeys)})
	return t
}

func memoryTable(k, b MapResult) Table {
	t := Table{
		Title:  fmt.Sprintf("memory and loading: %s keys, 16-byte bodies, 16-byte UUIDs", si(float64(k.Keys))),
		Header: []string{"metric", "clonekv", "baseline", "ratio", "target"},
		Rows: [][]string{
			{"RSS per key (loaded − idle) / keys", fmt.Sprintf("%.0f B", k.BytesPerKey), fmt.Sprintf("%.0f B", b.BytesPerKey), ratio(k.BytesPerKey, b.BytesPerKey), verdict("< 200 B", k.BytesPerKey < 200)},
			{"RSS idle / loaded / peak", fmt.Sprintf("%s / %s / %s", bytesName(k.IdleRSS), bytesName(k.LoadedRSS), bytesName(k.PeakRSS)),
				fmt.Sprintf("%s / %s / %s", bytesName(b.IdleRSS), bytesName(b.LoadedRSS), bytesName(b.PeakRSS)), "", ""},
			{"server CPU to load", k.ServerCPULoad.String(), b.ServerCPULoad.String(), ratio(ms(k.ServerCPULoad), ms(b.ServerCPULoad)), ""},
		},
	}
	for i, lp := range k.Load {
		var bl LoadPoint
		if i < len(b.Load) {
			bl = b.Load[i]
		}
		t.Rows = append(t.Rows, []string{fmt.Sprintf("load to %s keys, keys/s", si(float64(lp.Keys))), si(lp.Rate), si(bl.Rate), ratio(lp.Rate, bl.Rate), ""})
	}
	return t
}

func ttlTable(k, b TTLResult) Table {
	return Table{
		Title: fmt.Sprintf("ttl: %s keys; reaper tick clonekv %v, baseline %v; then %d keys with ttls of 1–%d s expire while timed updates flow",
			si(float64(k.MapKeys)), k.Tick, b.Tick, k.Keys, k.Spread),
		Header: []string{"metric", "clonekv", "baseline", "ratio", "target"},
		Rows: [][]string{
			{fmt.Sprintf("server CPU per tick, none due (%v window)", k.Quiet), k.CPUPerTick.String(), b.CPUPerTick.String(), ratio(ms(k.CPUPerTick), ms(b.CPUPerTick)), verdict("< 1 ms", time.Duration(k.CPUPerTick) < time.Millisecond)},
			{"server CPU per second, idle", Dur(time.Duration(k.QuietCPU) * time.Second / time.Duration(k.Quiet)).String(), Dur(time.Duration(b.QuietCPU) * time.Second / time.Duration(b.Quiet)).String(), "", ""},
			{"expiries published", frac(k.Expired, k.Keys), frac(b.Expired, b.Keys), "", ""},
			{"expiry lateness p50", k.LateP50.String(), b.LateP50.String(), ratio(ms(k.LateP50), ms(b.LateP50)), ""},
			{"expiry lateness p99 / max", fmt.Sprintf("%v / %v", k.LateP99, k.LateMax), fmt.Sprintf("%v / %v", b.LateP99, b.LateMax), ratio(ms(k.LateP99), ms(b.LateP99)), ""},
			{fmt.Sprintf("update latency at %s/s meanwhile p50", si(k.LatRate)), k.LatP50.String(), b.LatP50.String(), ratio(ms(k.LatP50), ms(b.LatP50)), ""},
			{"  p99 / p99.9", fmt.Sprintf("%v / %v", k.LatP99, k.LatP999), fmt.Sprintf("%v / %v", b.LatP99, b.LatP999), ratio(ms(k.LatP99), ms(b.LatP99)), ""},
			{"  max / lost", fmt.Sprintf("%v / %d", k.LatMax, k.LatLost), fmt.Sprintf("%v / %d", b.LatMax, b.LatLost), "", ""},
		},
	}
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }
func frac(a, b int) string { return fmt.Sprintf("%d/%d", a, b) }

// WriteText prints the command, the machine and every table.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "\nclonebench %s suite: %s\n", r.Suite, r.Command)
	m := r.Machine
	fmt.Fprintf(w, "machine: %d cores (GOMAXPROCS %d), %s, libzmq %s, %s; started %s, took %v\n",
		m.Cores, m.GoMaxProcs, m.Go, m.ZMQ, m.OS, r.Started.Format(time.RFC3339), r.Elapsed)
	for _, t := range r.Tables() {
		writeTable(w, t)
	}
}

func writeTable(w io.Writer, t Table) {
	fmt.Fprintf(w, "\n## %s\n\n", t.Title)
	widths := make([]int, len(t.Header))
	all := append([][]string{t.Header}, t.Rows...)
	for _, row := range all {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(row []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range row {
			b.WriteString(" " + c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.Header)
	sep := make([]string, len(widths))
	for i, n := range widths {
		sep[i] = strings.Repeat("-", n)
	}
	line(sep)
	for _, row := range t.Rows {
		line(row)
	}
	for _, n := range t.Notes {
		fmt.Fprintln(w, n)
	}
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
