package cluster

import (
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Load of the fault tests in make test: four writers at 250 updates/s
// each (1,000/s in all, under -race on a loaded 2-core box), 200 keys each.
const (
	faultWriters = 4
	faultRate    = 250
	faultKeys    = 200
)

// faultRig is a cluster under load: a recorder on every node process, the
// writers streaming through every node.
type faultRig struct {
	t    *testing.T
	c    *testCluster
	zctx *zmq.Context
	recs []*recorder          // every recorder ever started
	live map[string]*recorder // node name -> its current process's recorder
	ws   *writers
}

func newFaultRig(t *testing.T, opts clusterOpts, writers, rate int) *faultRig {
	t.Helper()
	c := newCluster(t, opts)
	r := &faultRig{t: t, c: c, zctx: newZctx(t), live: map[string]*recorder{}}
	t.Cleanup(func() {
		if r.ws != nil {
			r.ws.halt(t)
		}
		for _, rec := range r.live {
			rec.finish(0)
		}
	})
	for _, n := range c.nodes {
		r.record(n)
	}
	r.ws = startWriters(r.zctx, c.nodes, writers, rate, 10_000_000, faultKeys)
	return r
}

// record starts a recorder on n's current process.
func (r *faultRig) record(n *node) {
	r.t.Helper()
	rec := startRecorder(r.t, r.zctx, n)
	r.recs = append(r.recs, rec)
	r.live[n.name] = rec
}

// retire drains and stops the recorder of n's process that just ended.
func (r *faultRig) retire(n *node) {
	if rec := r.live[n.name]; rec != nil {
		rec.finish(500 * time.Millisecond)
		delete(r.live, n.name)
	}
}

// progress waits until every recorder of a node that is up has received
// at least more KVPUBs than now, so the cluster is seen moving.
func (r *faultRig) progress(more int, d time.Duration, what string) {
	r.t.Helper()
	base := map[*recorder]int{}
	var watch []*recorder
	for _, n := range r.c.running() {
		if rec := r.live[n.name]; rec != nil {
			base[rec] = rec.count()
			watch = append(watch, rec)
		}
	}
	deadline := time.Now().Add(d)
	for {
		ok := true
		for _, rec := range watch {
			ok = ok && rec.count() >= base[rec]+more
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: the recorders did not receive %d more updates within %v:%s", what, more, d, pubsSummary(watch))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish halts the writers, waits until every node holds the same map,
// drains every recorder and checks everything against the rules.
func (r *faultRig) finish() tally {
	r.t.Helper()
	r.ws.halt(r.t)
	final := converge(r.t, r.zctx, r.c, 60*time.Second)
	for name, rec := range r.live {
		rec.finish(time.Second)
		delete(r.live, name)
	}
	tl := check(r.t, r.recs, final, r.ws)
	r.ws = nil
	return tl
}

// TestKill9Leader is issue 13, test 2 (kill -9): four writers stream
// through random nodes; kill -9 the leader; a new leader takes over and
// the cluster moves on; restart the killed node; all three maps are
// identical and every recording agrees with them.
func TestKill9Leader(t *testing.T) {
	r := newFaultRig(t, clusterOpts{}, faultWriters, faultRate)
	r.progress(300, 30*time.Second, "before the fault")
	old := r.c.leader(20 * time.Second)
	killed := time.Now()
	r.c.kill9(old)
	r.retire(old)
	nl := r.c.leader(30 * time.Second)
	took := time.Since(killed)
	if nl == old {
		t.Fatalf("%s still leads after kill -9", old.name)
	}
	r.progress(300, 30*time.Second, "after the new leader")
	r.c.start(old)
	r.record(old)
	r.progress(200, 30*time.Second, "after the restart")
	tl := r.finish()
	t.Logf("kill -9 of leader %s: %s agreed leader %v later; %v", old.name, nl.name, took.Round(time.Millisecond), tl)
}

// TestSIGSTOPFollower is issue 13, test 2 (SIGSTOP of a follower for 3 s,
// well past raft's heartbeat timeout): the others carry on; once
// continued it catches up and publishes what it missed, in order.
func TestSIGSTOPFollower(t *testing.T) {
	r := newFaultRig(t, clusterOpts{}, faultWriters, faultRate)
	r.progress(300, 30*time.Second, "before the fault")
	l := r.c.leader(20 * time.Second)
	f := r.c.others(l)[0]
	r.c.sigstop(f)
	stopped := time.Now()
	r.progress(300, 30*time.Second, "with a follower stopped")
	time.Sleep(time.Until(stopped.Add(3 * time.Second))) // the fault lasts 3 s (at least)
	r.c.sigcont(f)
	r.c.leader(30 * time.Second)
	r.progress(300, 30*time.Second, "after SIGCONT")
	tl := r.finish()
	t.Logf("SIGSTOP of follower %s (leader %s): %v", f.name, l.name, tl)
}

// TestSIGSTOPLeader is issue 13, test 2 (SIGSTOP of the leader): the
// others elect a new leader and carry on; once continued, the old leader
// steps down, follows the new one and catches up, and never publishes a
// sequence that conflicts with the others' (the checker).
func TestSIGSTOPLeader(t *testing.T) {
	r := newFaultRig(t, clusterOpts{}, faultWriters, faultRate)
	r.progress(300, 30*time.Second, "before the fault")
	old := r.c.leader(20 * time.Second)
	stopped := time.Now()
	r.c.sigstop(old)
	nl := r.c.leader(30 * time.Second)
	took := time.Since(stopped)
	if nl == old {
		t.Fatalf("%s still leads while stopped", old.name)
	}
	r.progress(300, 30*time.Second, "after the new leader")
	r.c.sigcont(old)
	var st nodeStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if st, err = old.status(); err == nil && st.Role != roleLeader && st.Leader != "" && st.Leader != old.name {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old leader %s has not stepped down within 30s of SIGCONT: %+v (%v)", old.name, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.c.leader(30 * time.Second)
	r.progress(300, 30*time.Second, "after SIGCONT")
	tl := r.finish()
	t.Logf("SIGSTOP of leader %s: %s agreed leader %v later; after SIGCONT %s follows %s (term %d); %v",
		old.name, nl.name, took.Round(time.Millisecond), old.name, st.Leader, st.Term, tl)
}
