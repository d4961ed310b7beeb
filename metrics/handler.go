package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/server"
)

// committedMetrics are kept by the metrics handler: what the store
// committed, as a handler registered through server.Config.Handlers sees
// it. They prove the extension point carries a real handler, and
// clonekv_committed_last_sequence against clonekv_sequence shows how far
// behind the handlers run.
type committedMetrics struct {
	updates *prometheus.CounterVec
	bytes   prometheus.Counter
	batches prometheus.Counter
	lastSeq prometheus.Gauge
}

func newCommittedMetrics() *committedMetrics {
	return &committedMetrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "committed_updates_total",
			Help: "Updates committed by the store, by kind: set, delete, expire (seen by the metrics handler).",
		}, []string{"kind"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "committed_bytes_total",
			Help: "Key plus value bytes of committed updates.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "committed_batches_total",
			Help: "Committed batches (one per store message).",
		}),
		lastSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "committed_last_sequence",
			Help: "Sequence of the last update the metrics handler has seen.",
		}),
	}
}

func (m *committedMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.updates, m.bytes, m.batches, m.lastSeq)
	// Present from the first scrape, not only after the first update.
	for _, k := range []string{"set", "delete", "expire"} {
		m.updates.WithLabelValues(k)
	}
}

// committedHandler is the metrics handler. OnCommit only counts (no I/O,
// no locks beyond the Prometheus atomics), so it keeps up with any rate
// the store commits at.
type committedHandler struct{ m *committedMetrics }

func (h *committedHandler) OnCommit(b actors.Batch) {
	var sets, deletes, expires, size int
	for i := range b.Updates {
		u := &b.Updates[i]
		size += len(u.Msg.Key) + len(u.Msg.Body)
		switch {
		case u.Expired:
			expires++
		case u.Msg.IsDelete():
			deletes++
		default:
			sets++
		}
	}
	h.m.updates.WithLabelValues("set").Add(float64(sets))
	h.m.updates.WithLabelValues("delete").Add(float64(deletes))
	h.m.updates.WithLabelValues("expire").Add(float64(expires))
	h.m.bytes.Add(float64(size))
	h.m.batches.Inc()
	h.m.lastSeq.Set(float64(b.Updates[len(b.Updates)-1].Msg.Seq))
}

// HandlerName is the name of the metrics handler in the server.
const HandlerName = "metrics"

// Handler returns the handler to add to server.Config.Handlers.
func (m *Metrics) Handler() server.Handler {
	return server.Handler{Name: HandlerName, Handler: &committedHandler{m: m.committed}}
}
