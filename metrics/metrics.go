package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is one server's metrics: create it before the server (its
// Handler goes into the server's Config), then Watch the server.
//
//	m := metrics.New()
//	cfg.Handlers = append(cfg.Handlers, m.Handler())
//	srv, err := server.New(cfg)
//	m.Watch(srv)
type Metrics struct {
	// Registry holds every clonekv metric plus the Go runtime and process
	// collectors; serve it with HTTPHandler.
	Registry  *prometheus.Registry
	committed *committedMetrics
}

// New returns metrics on a registry of their own.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), committed: newCommittedMetrics()}
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.committed.register(m.Registry)
	return m
}

// Watch registers the collector that reads src's counters on each scrape.
// Watch one server per Metrics.
func (m *Metrics) Watch(src Source) error {
	if err := m.Registry.Register(newStatsCollector(src)); err != nil {
		return fmt.Errorf("metrics: watch server: %w", err)
	}
	if err := m.Registry.Register(newClusterCollector(src)); err != nil {
		return fmt.Errorf("metrics: watch server: %w", err)
	}
	return nil
}
