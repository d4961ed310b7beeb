package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// clusterCollector exposes a cluster node's raft figures (stats.Cluster,
// README "Running a cluster"). A single node has none of these series.
type clusterCollector struct {
	src Source

	role, term, leader, leaderCommit, lag, lastContact, ready *prometheus.Desc
	elections, leaderChanges, peerLag, peerContact            *prometheus.Desc
}

func newClusterCollector(src Source) *clusterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &clusterCollector{
		src:           src,
		role:          d("raft_role", "1 for this node's raft role (leader, follower, candidate), 0 for the others.", "role"),
		term:          d("raft_term", "The raft term this node is in."),
		leader:        d("raft_leader", "1, labelled with the name of the leader this node knows of (no series while there is none).", "name"),
		leaderCommit:  d("raft_leader_commit_index", "The leader's commit index as this node last heard it (its own on the leader)."),
		lag:           d("raft_lag_entries", "Log entries between the leader's commit index and this node's applied index."),
		lastContact:   d("raft_last_contact_seconds", "Time since this node last heard from the leader (0 on the leader)."),
		ready:         d("raft_ready", "1 while the node has a leader, hears from it and lags by at most --max-lag entries (/readyz)."),
		elections:     d("raft_elections_total", "Elections this node started (it became a candidate)."),
		leaderChanges: d("raft_leader_changes_total", "Changes of leader this node saw."),
		peerLag:       d("raft_peer_lag_entries", "On the leader: entries between its last log index and each follower's, as last heard.", "peer"),
		peerContact:   d("raft_peer_last_contact_seconds", "On the leader: time since each follower last answered.", "peer"),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.role, c.term, c.leader, c.leaderCommit, c.lag, c.lastContact, c.ready,
		c.elections, c.leaderChanges, c.peerLag, c.peerContact} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	cs := c.src.Stats().Cluster.Load()
	if cs == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	for _, r := range []string{"leader", "follower", "candidate"} {
		v := 0.0
		if cs.Role == r {
			v = 1
		}
		gauge(c.role, v, r)
	}
	gauge(c.term, float64(cs.Term))
	if cs.Leader != "" {
		gauge(c.leader, 1, cs.Leader)
	}
	gauge(c.leaderCommit, float64(cs.LeaderCommitIndex))
	gauge(c.lag, float64(cs.Lag))
	if !cs.LastContact.IsZero() {
		gauge(c.lastContact, max(cs.Sampled.Sub(cs.LastContact).Seconds(), 0))
	}
	ready := 0.0
	if cs.NotReady == "" {
		ready = 1
	}
	gauge(c.ready, ready)
	counter(c.elections, cs.Elections)
	counter(c.leaderChanges, cs.LeaderChanges)
	for _, p := range cs.Peers {
		if !p.Known {
			continue
		}
		gauge(c.peerLag, float64(p.Lag), p.Name)
		gauge(c.peerContact, max(cs.Sampled.Sub(p.LastContact).Seconds(), 0), p.Name)
	}
}
