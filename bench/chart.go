package bench

import (
	"fmt"
	"html"
	"os"
	"strings"
	"time"
)

// chartColors per implementation.
var chartColors = map[string]string{ImplClonekv: "#2b6cb0", ImplBaseline: "#c05621", ImplRelay: "#718096"}

// bar is one bar of a grouped bar chart.
type bar struct {
	series string
	value  float64
	label  string
}

// barGroup is one group of bars under a label.
type barGroup struct {
	label string
	bars  []bar
}

// svgBars draws grouped bars scaled to the largest value, as inline SVG.
func svgBars(title, unit string, groups []barGroup) string {
	const w, h, top, bottom, left = 900, 320, 30, 60, 60
	maxV := 0.0
	n := 0
	for _, g := range groups {
		for _, b := range g.bars {
			maxV = max(maxV, b.value)
			n++
		}
	}
	if maxV == 0 || n == 0 {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`, w, h)
	fmt.Fprintf(&sb, `<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>`, left, html.EscapeString(title))
	plotH := float64(h - top - bottom)
	for i := 0; i <= 4; i++ {
		y := float64(top) + plotH*(1-float64(i)/4)
		fmt.Fprintf(&sb, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, w-10, y, y)
		fmt.Fprintf(&sb, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, left-4, y+4, html.EscapeString(si(maxV*float64(i)/4)+unit))
	}
	groupW := float64(w-left-10) / float64(len(groups))
	for gi, g := range groups {
		x0 := float64(left) + groupW*float64(gi)
		bw := (groupW - 16) / float64(max(len(g.bars), 1))
		for bi, b := range g.bars {
			bh := plotH * b.value / maxV
			x := x0 + 8 + bw*float64(bi)
			fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
				x, float64(top)+plotH-bh, bw-2, bh, chartColors[b.series], html.EscapeString(b.series+": "+b.label))
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`, x+bw/2-1, float64(top)+plotH-bh-3, html.EscapeString(b.label))
		}
		fmt.Fprintf(&sb, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x0+groupW/2, h-bottom+16, html.EscapeString(g.label))
	}
	lx := left
	for _, s := range []string{ImplClonekv, ImplBaseline, ImplRelay} {
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`, lx, h-22, chartColors[s], lx+14, h-13, s)
		lx += 90
	}
	sb.WriteString(`</svg>`)
	return sb.String()
}

// WriteChart writes a self-contained HTML page (inline SVG, no scripts)
// charting zero-loss updates/s and latency percentiles, with the tables.
func (r *Report) WriteChart(path string) error {
	var rate, unb []barGroup
	var lat []barGroup
	seen := map[UpdatesCase]bool{}
	for _, u := range r.Updates {
		if seen[u.Case] {
			continue
		}
		seen[u.Case] = true
		g, gu := barGroup{label: u.Case.String()}, barGroup{label: u.Case.String()}
		for _, impl := range []string{ImplClonekv, ImplBaseline, ImplRelay} {
			for _, x := range r.Updates {
				if x.Case == u.Case && x.Impl == impl {
					g.bars = append(g.bars, bar{impl, x.ZeroLossMedian, si(x.ZeroLossMedian)})
					gu.bars = append(gu.bars, bar{impl, x.UnboundedDeliv, si(x.UnboundedDeliv)})
				}
			}
		}
		rate, unb = append(rate, g), append(unb, gu)
		for _, q := range []struct {
			name string
			get  func(LatencyPoint) Dur
		}{{"p50", func(l LatencyPoint) Dur { return l.P50 }}, {"p99", func(l LatencyPoint) Dur { return l.P99 }}, {"p99.9", func(l LatencyPoint) Dur { return l.P999 }}} {
			for _, impl := range []string{ImplClonekv, ImplBaseline} {
				for _, x := range r.Updates {
					if x.Case != u.Case || x.Impl != impl {
						continue
					}
					for _, lp := range x.Latency {
						if lp.Fraction != 0.5 {
							continue
						}
						label := fmt.Sprintf("%v %s", u.Case, q.name)
						if len(lat) == 0 || lat[len(lat)-1].label != label {
							lat = append(lat, barGroup{label: label})
						}
						us := float64(time.Duration(q.get(lp))) / float64(time.Microsecond)
						lat[len(lat)-1].bars = append(lat[len(lat)-1].bars, bar{impl, us, q.get(lp).String()})
					}
				}
			}
		}
	}
	var sb strings.Builder
	sb.WriteString("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>clonebench</title>\n")
	sb.WriteString("<style>body{font-family:sans-serif;max-width:1000px;margin:1em auto}pre{font-size:12px;overflow-x:auto}</style></head><body>\n")
	fmt.Fprintf(&sb, "<h1>clonebench %s</h1>\n<p>%s</p>\n", html.EscapeString(r.Suite), html.EscapeString(r.Command))
	m := r.Machine
	fmt.Fprintf(&sb, "<p>%d cores, %s, libzmq %s, %s; started %s, took %v</p>\n", m.Cores, m.Go, m.ZMQ, m.OS, r.Started.Format(time.RFC3339), r.Elapsed)
	for _, s := range []string{
		svgBars("zero-loss updates/s (median)", "", rate),
		svgBars("unbounded rate: updates/s delivered per subscriber", "", unb),
		svgBars("latency at 50% of the baseline's zero-loss rate (µs)", "µs", lat),
	} {
		sb.WriteString(s + "\n")
	}
	var tb strings.Builder
	for _, t := range r.Tables() {
		writeTable(&tb, t)
	}
	fmt.Fprintf(&sb, "<pre>%s</pre>\n</body></html>\n", html.EscapeString(tb.String()))
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}
