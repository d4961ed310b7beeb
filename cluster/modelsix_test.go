package cluster

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
)

// sixView is what the test reads of a running sixClient.
type sixView struct {
	sent, failovers, joins, server, subs int
	seq                                  int64
}

// TestModelSixClient is issue 13, test 4: a client written as the Guide's
// Model Six client (every update on a PUB to both of its servers, HUGZ
// failover between them) runs against two followers of a three-node
// cluster with --collector sub. Every update it sends is applied once (the
// leader drops the second copy by its UUID); kill -9 the server it follows
// and it fails over to the other on the silence, and its map ends equal to
// the cluster's.
func TestModelSixClient(t *testing.T) {
	r := newFaultRig(t, clusterOpts{extra: []string{"--collector", "sub"}}, 0, 0)
	l := r.c.leader(20 * time.Second)
	pair := r.c.others(l)
	six := &sixClient{ports: []int{pair[0].port, pair[1].port}, subtree: "/six/", ttl: time.Second,
		rate: 100, max: 800, keys: 300}
	var mu sync.Mutex
	var view sixView
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- six.run(ctx, r.zctx, func(c *sixClient) {
			mu.Lock()
			view = sixView{sent: len(c.sent), failovers: c.failovers, joins: c.joins, server: c.server, subs: c.subs, seq: c.seq}
			mu.Unlock()
		})
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Model Six client: %v", err)
			}
		}
	}
	defer stop()
	get := func() sixView { mu.Lock(); defer mu.Unlock(); return view }
	waitFor(t, 30*time.Second, "the Model Six client joined and sending", func() bool {
		v := get()
		return v.joins >= 1 && v.sent >= 200
	})
	if v := get(); v.failovers != 0 || v.server != 0 {
		t.Fatalf("the client failed over before any fault: %+v", v)
	}
	killed := time.Now()
	r.c.kill9(pair[0])
	r.retire(pair[0])
	var took time.Duration
	waitFor(t, 30*time.Second, "the Model Six client failed over to its second server", func() bool {
		v := get()
		if v.failovers >= 1 && v.server == 1 && v.joins >= 2 {
			took = time.Since(killed)
			return true
		}
		return false
	})
	if bound := six.ttl + 10*time.Second; took > bound {
		t.Errorf("failover took %v after kill -9, want within %v (its silence ttl %v and a join)", took, bound, six.ttl)
	}
	waitFor(t, 60*time.Second, "every update sent", func() bool { return get().sent == six.max })
	// Every update published: wait until the leader's recorder has them.
	want := map[string]bool{}
	for i := range six.max {
		want[string(sixUUID(i))] = true
	}
	waitFor(t, 30*time.Second, "every update the client sent published by the leader", func() bool {
		got := 0
		for _, p := range r.live[l.name].recorded() {
			if want[p.UUID] {
				got++
			}
		}
		return got == len(want)
	})
	final := convergeNodes(t, r.zctx, r.c.running(), 30*time.Second)
	wantMap := map[string]string{}
	for k, e := range final.Map {
		if strings.HasPrefix(k, six.subtree) {
			wantMap[k] = e.Body
		}
	}
	waitFor(t, 30*time.Second, "the client at the cluster's sequence", func() bool { return get().seq >= final.Seq })
	stop()
	if !maps.Equal(six.kv, wantMap) {
		t.Errorf("the Model Six client holds %d keys, the cluster %d under %s%s", len(six.kv), len(wantMap), six.subtree,
			firstDiff(asEntries(six.kv), asEntries(wantMap)))
	}
	for name, rec := range r.live {
		rec.finish(time.Second)
		delete(r.live, name)
	}
	// check fails on an update (UUID) at two sequences: applied twice.
	tl := check(t, r.recs, final, nil)
	missing := 0
	seen := map[string]bool{}
	for _, rec := range r.recs {
		for _, p := range rec.recorded() {
			seen[p.UUID] = true
		}
	}
	for u := range want {
		if !seen[u] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of the %d updates the Model Six client sent to both servers were never applied", missing, len(want))
	}
	t.Logf("Model Six client on %s and %s (leader %s): %d updates sent to both, each applied once; failover %v after kill -9 (%d failovers, %d joins); %v",
		pair[0].name, pair[1].name, l.name, len(want), took.Round(time.Millisecond), six.failovers, six.joins, tl)
}

func asEntries(m map[string]string) map[string]entry {
	out := make(map[string]entry, len(m))
	for k, v := range m {
		out[k] = entry{Body: v}
	}
	return out
}
