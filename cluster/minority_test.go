package cluster

import (
	"maps"
	"net/http"
	"testing"
	"time"
)

// TestMinorityStopsWrites is issue 13, test 5: with two of three nodes
// stopped (SIGSTOP: their sockets stay open, nothing answers), the one
// left — the leader, the harder case: it must notice it lost its quorum —
// stops taking writes (counted; /readyz 503), keeps serving its last
// committed state, publishes nothing while alone, and after the others
// are continued the cluster agrees again with nothing it published lost.
func TestMinorityStopsWrites(t *testing.T) {
	r := newFaultRig(t, clusterOpts{}, 0, 0)
	alone := r.c.leader(20 * time.Second)
	// Some committed state first.
	pre := startWriters(r.zctx, []*node{alone}, 1, 500, 300, 1000)
	waitFor(t, 30*time.Second, "the first updates sent", func() bool { return pre.total() == 300 })
	pre.halt(t)
	before := converge(t, r.zctx, r.c, 30*time.Second)
	rec := r.live[alone.name]
	waitFor(t, 10*time.Second, "the leader's recorder at the committed sequence", func() bool {
		p := rec.recorded()
		return len(p) > 0 && p[len(p)-1].Seq == before.Seq
	})
	refused0 := alone.writesRefused(t)

	for _, o := range r.c.others(alone) {
		r.c.sigstop(o)
	}
	partitioned := time.Now()
	published := rec.count()
	hugz0, _ := rec.lastHugz()
	r.ws = startWritersFrom(r.zctx, 1, []*node{alone}, 1, 100, 10_000_000, 1000)
	waitFor(t, 20*time.Second, "/readyz 503 on the node left alone", func() bool { return alone.ready() == http.StatusServiceUnavailable })
	notReady := time.Since(partitioned)
	waitFor(t, 20*time.Second, "writes refused and counted on the node left alone", func() bool {
		return alone.writesRefused(t) > refused0
	})
	// Alone for a while longer: still serving, still nothing published.
	time.Sleep(2 * time.Second)
	d, err := dumpNode(r.zctx, alone, 10*time.Second)
	if err != nil {
		t.Fatalf("the node left alone does not serve its last committed state: %v", err)
	}
	if d.Seq != before.Seq || !maps.Equal(d.Map, before.Map) {
		t.Errorf("the node left alone serves sequence %d (%d keys), want its last committed state, sequence %d (%d keys)%s",
			d.Seq, len(d.Map), before.Seq, len(before.Map), firstDiff(before.Map, d.Map))
	}
	if n := rec.count(); n != published {
		p := rec.recorded()
		t.Errorf("the node left alone published %d updates without a quorum (sequences %d..%d): uncommitted", n-published,
			p[published].Seq, p[n-1].Seq)
	}
	if h := alone.ready(); h != http.StatusServiceUnavailable {
		t.Errorf("/readyz on the node left alone: %d, want 503", h)
	}
	hugz1, props := rec.lastHugz()
	if hugz1 <= hugz0 {
		t.Errorf("the node left alone stopped its heartbeats (%d HUGZ before, %d after)", hugz0, hugz1)
	}
	held := alone.writesRefused(t) - refused0
	sent := r.ws.halt(t)
	r.ws = nil

	for _, o := range r.c.others(alone) {
		r.c.sigcont(o)
	}
	healed := time.Now()
	nl := r.c.leader(30 * time.Second)
	waitFor(t, 20*time.Second, "/readyz 200 again on every node", func() bool {
		for _, n := range r.c.nodes {
			if n.ready() != http.StatusOK {
				return false
			}
		}
		return true
	})
	final := converge(t, r.zctx, r.c, 60*time.Second)
	for name, rc := range r.live {
		rc.finish(time.Second)
		delete(r.live, name)
	}
	tl := check(t, r.recs, final, nil)
	// What the lone node held is forwarded to the leader once there is one
	// again, and applied: nothing it was sent is lost (its queue, 100,000
	// updates, never filled).
	applied := map[string]bool{}
	for _, rc := range r.recs {
		for _, p := range rc.recorded() {
			if w, _, ok := parseUUID(p.UUID); ok && w == 1 {
				applied[p.UUID] = true
			}
		}
	}
	if int64(len(applied)) != sent {
		t.Errorf("%d updates were sent to the lone node, %d of them applied after the heal", sent, len(applied))
	}
	t.Logf("%s alone (leader before): /readyz 503 %v after the others stopped; %d updates sent to it alone, %d of them held in its forward queue or dropped (counted) when the writer stopped, none published (%d applied after the heal); HUGZ went on (last %q); healed: %s leads %v after SIGCONT; %v",
		alone.name, notReady.Round(time.Millisecond), sent, int64(held), len(applied), props, nl.name, time.Since(healed).Round(time.Millisecond), tl)
}
