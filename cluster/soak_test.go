//go:build soak

package cluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterSoak is issue 13's longer randomized fault run (make soak):
// for CLUSTER_SOAK (default 3m) four writers stream through random nodes
// at 250 updates/s each while a random fault hits the cluster every few
// seconds — kill -9 of the leader or a follower (restarted after 0-3 s),
// SIGSTOP of the leader or a follower for 1-4 s, or two nodes stopped at
// once for 2-4 s — each followed by the cluster agreeing on a leader and
// moving on. At the end every node must hold the same map and every
// recording agree with it (check). It prints the counts.
func TestClusterSoak(t *testing.T) {
	dur := 3 * time.Minute
	if v := os.Getenv("CLUSTER_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("CLUSTER_SOAK=%q: want a duration such as 3m", v)
		}
		dur = d
	}
	// CLUSTER_SOAK_SEED replays a run's choice of faults, targets and
	// pauses (their timing still depends on the machine).
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CLUSTER_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CLUSTER_SOAK_SEED=%q: %v (want the decimal seed a run printed)", v, err)
		}
		seed = s
	}
	rng := rand.New(rand.NewPCG(seed, 13))
	t.Logf("seed %d", seed)
	r := newFaultRig(t, clusterOpts{}, 4, 250)
	r.progress(500, 30*time.Second, "before the first fault")
	faults := map[string]int{}
	var leaders []string
	var failovers []time.Duration
	note := func(n *node) {
		if len(leaders) == 0 || leaders[len(leaders)-1] != n.name {
			leaders = append(leaders, n.name)
		}
	}
	note(r.c.leader(20 * time.Second))
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end); i++ {
		pause := time.Duration(2000+rng.IntN(4000)) * time.Millisecond
		time.Sleep(pause)
		l := r.c.leader(30 * time.Second)
		note(l)
		fs := r.c.others(l)
		f := fs[rng.IntN(len(fs))]
		hold := time.Duration(1000+rng.IntN(3000)) * time.Millisecond
		kind := []string{"kill -9 leader", "kill -9 follower", "SIGSTOP leader", "SIGSTOP follower", "minority"}[rng.IntN(5)]
		faults[kind]++
		at := time.Now()
		switch kind {
		case "kill -9 leader", "kill -9 follower":
			victim := l
			if kind == "kill -9 follower" {
				victim = f
			}
			r.c.kill9(victim)
			r.retire(victim)
			if victim == l {
				note(r.c.leader(30 * time.Second))
				failovers = append(failovers, time.Since(at))
			}
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
			r.c.start(victim)
			r.record(victim)
		case "SIGSTOP leader", "SIGSTOP follower":
			victim := l
			if kind == "SIGSTOP follower" {
				victim = f
			}
			r.c.sigstop(victim)
			if victim == l {
				note(r.c.leader(30 * time.Second))
				failovers = append(failovers, time.Since(at))
			}
			time.Sleep(time.Until(at.Add(hold)))
			r.c.sigcont(victim)
		case "minority":
			for _, o := range fs {
				r.c.sigstop(o)
			}
			time.Sleep(hold)
			for _, o := range fs {
				r.c.sigcont(o)
			}
		}
		note(r.c.leader(30 * time.Second))
		r.progress(100, 60*time.Second, fmt.Sprintf("after fault %d (%s)", i+1, kind))
	}
	var elections int64
	for _, n := range r.c.nodes {
		if st, err := n.status(); err == nil {
			elections += st.Elections
		}
	}
	tl := r.finish()
	var fl []string
	total := 0
	for k, v := range faults {
		fl = append(fl, fmt.Sprintf("%s %d", k, v))
		total += v
	}
	var worst time.Duration
	for _, d := range failovers {
		worst = max(worst, d)
	}
	t.Logf("cluster soak %v (seed %d): %d faults injected (%s); leaders in turn %v (%d changes seen, %d elections started since the nodes' last starts); failover to an agreed leader: %d measured, worst %v",
		dur, seed, total, strings.Join(fl, ", "), leaders, len(leaders)-1, elections, len(failovers), worst.Round(time.Millisecond))
	t.Logf("counts: %v", tl)
}
