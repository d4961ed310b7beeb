package cluster

import (
	"fmt"
	"maps"
	"sort"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// entry is one key of a node's map as its snapshot gives it.
type entry struct {
	Body, UUID string
	Seq        int64
}

// dump is a node's whole map and its snapshot's sequence.
type dump struct {
	Map map[string]entry
	Seq int64
}

// dumpNode asks n for its whole map on a fresh DEALER (owned by this call)
// and returns it, or an error when the node does not answer completely
// within d or refuses (a KTHXBAI with refused=).
func dumpNode(zctx *zmq.Context, n *node, d time.Duration) (dump, error) {
	dl, err := transport.Connect(zctx, zmq.DEALER, n.endpoint(), transport.Options{})
	if err != nil {
		return dump{}, err
	}
	defer dl.Close()
	if err := transport.SendMessage(dl, [][]byte{[]byte(kvmsg.CmdSnapshot), nil}, 0); err != nil {
		return dump{}, err
	}
	out := dump{Map: map[string]entry{}}
	deadline := time.Now().Add(d)
	for {
		frames, err := testkit.RecvWithin(dl, time.Until(deadline))
		if err != nil {
			return dump{}, fmt.Errorf("%s snapshot after %d keys: %w", n.name, len(out.Map), err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			return dump{}, fmt.Errorf("%s snapshot: %w", n.name, err)
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			if why, ok := m.Prop(kvmsg.PropRefused); ok {
				return dump{}, fmt.Errorf("%s refused the snapshot: %s", n.name, why)
			}
			out.Seq = m.Seq
			return out, nil
		}
		out.Map[string(m.Key)] = entry{Body: string(m.Body), UUID: string(m.UUID), Seq: m.Seq}
	}
}

// converge waits until every node of c (all must be up) holds the same map
// at the same sequence, and returns it; it fails the test after d.
func converge(t testing.TB, zctx *zmq.Context, c *testCluster, d time.Duration) dump {
	t.Helper()
	return convergeNodes(t, zctx, c.nodes, d)
}

// convergeNodes is converge over some of the nodes.
func convergeNodes(t testing.TB, zctx *zmq.Context, nodes []*node, d time.Duration) dump {
	t.Helper()
	deadline := time.Now().Add(d)
	var why string
	for {
		ds, err := dumpAll(zctx, nodes)
		if err == nil {
			why = sameDumps(nodes, ds)
			if why == "" {
				return ds[0]
			}
		} else {
			why = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes' maps did not converge within %v: %s", d, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func dumpAll(zctx *zmq.Context, nodes []*node) ([]dump, error) {
	var ds []dump
	for _, n := range nodes {
		dm, err := dumpNode(zctx, n, 10*time.Second)
		if err != nil {
			return nil, err
		}
		ds = append(ds, dm)
	}
	return ds, nil
}

// sameDumps says how ds differ ("" when they are identical).
func sameDumps(nodes []*node, ds []dump) string {
	for i := 1; i < len(ds); i++ {
		if ds[i].Seq != ds[0].Seq {
			return fmt.Sprintf("%s at sequence %d, %s at %d", nodes[0].name, ds[0].Seq, nodes[i].name, ds[i].Seq)
		}
		if !maps.Equal(ds[i].Map, ds[0].Map) {
			return fmt.Sprintf("%s and %s hold different maps at sequence %d (%d and %d keys)%s", nodes[0].name, nodes[i].name,
				ds[0].Seq, len(ds[0].Map), len(ds[i].Map), firstDiff(ds[0].Map, ds[i].Map))
		}
	}
	return ""
}

func firstDiff(a, b map[string]entry) string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		x, okx := a[k]
		y, oky := b[k]
		if okx != oky || x != y {
			return fmt.Sprintf(": first difference at %q: %+v (%v) vs %+v (%v)", k, x, okx, y, oky)
		}
	}
	return ""
}

// tally is what a check counted.
type tally struct {
	Sent, Unsent   int64 // by the writers
	Published      int   // distinct sequences any recorder received
	Received       int   // KVPUBs received over all recorders
	Recorders      int
	Gaps, GapSeqs  int // gaps inside one recorder's stream, and the sequences they skipped
	Keys           int
	Seq            int64
	Overwritten    int // received updates no longer in the final map (a later update of the key is)
	FinalFromStray int // final entries no recorder received (published while no recorder listened, or not published)
}

func (tl tally) String() string {
	return fmt.Sprintf("%d sent (%d sends refused by full queues), %d sequences published and received (%d KVPUBs over %d recorders, %d gaps skipping %d), final map %d keys at sequence %d (%d received updates overwritten since, %d final entries no recorder saw)",
		tl.Sent, tl.Unsent, tl.Published, tl.Received, tl.Recorders, tl.Gaps, tl.GapSeqs, tl.Keys, tl.Seq, tl.Overwritten, tl.FinalFromStray)
}

// check holds everything the recorders received and the final map (all
// nodes identical, see converge) to issue 13's rules:
//   - no sequence carries two different updates (across every recorder and
//     the final map), and no update (UUID) is at two sequences;
//   - every update a recorder received is one a writer sent (its key and
//     body match its UUID);
//   - every update a recorder received is in the final map, unless a later
//     sequence overwrote its key;
//   - inside one recorder's stream (one process of one node) sequences
//     follow each other: no gap (the recorder queues without bound and the
//     nodes' --pub-hwm is far above what is sent, so a gap is a lost update).
//
// It fails the test on the first broken rule and returns the counts.
func check(t testing.TB, recs []*recorder, final dump, ws *writers) tally {
	t.Helper()
	tl := tally{Keys: len(final.Map), Seq: final.Seq, Recorders: len(recs)}
	if ws != nil {
		tl.Sent, tl.Unsent = ws.total(), ws.unsent.Load()
	}
	type where struct {
		u  pub
		at string
	}
	bySeq := map[int64]where{}
	byUUID := map[string]where{}
	note := func(u pub, at string) {
		if prev, ok := bySeq[u.Seq]; ok && (prev.u.Key != u.Key || prev.u.Body != u.Body || prev.u.UUID != u.UUID) {
			t.Fatalf("sequence %d carries two updates: %q=%q (uuid %x, %s) and %q=%q (uuid %x, %s)",
				u.Seq, prev.u.Key, prev.u.Body, prev.u.UUID, prev.at, u.Key, u.Body, u.UUID, at)
		}
		bySeq[u.Seq] = where{u, at}
		if u.UUID == "" {
			return
		}
		if prev, ok := byUUID[u.UUID]; ok && prev.u.Seq != u.Seq {
			t.Fatalf("update %x (%q=%q) applied twice: at sequence %d (%s) and %d (%s)", u.UUID, u.Key, u.Body, prev.u.Seq, prev.at, u.Seq, at)
		}
		byUUID[u.UUID] = where{u, at}
	}
	for _, r := range recs {
		if err := r.malformed(); err != nil {
			t.Fatalf("recorder on %s received a malformed message: %v", r.node, err)
		}
		pubs := r.recorded()
		tl.Received += len(pubs)
		for i, u := range pubs {
			at := fmt.Sprintf("published by %s", r.node)
			if ws != nil {
				w, k, ok := parseUUID(u.UUID)
				if !ok || w < ws.first || w >= ws.first+ws.n || u.Key != writeKey(w, k, ws.keys) || u.Body != writeBody(w, k) {
					t.Fatalf("%s published %q=%q (uuid %x) at sequence %d: no writer sent that", r.node, u.Key, u.Body, u.UUID, u.Seq)
				}
			}
			note(u, at)
			if i > 0 && u.Seq != pubs[i-1].Seq+1 {
				if u.Seq <= pubs[i-1].Seq {
					t.Fatalf("%s published sequence %d after %d: the sequence went back inside one process", r.node, u.Seq, pubs[i-1].Seq)
				}
				tl.Gaps++
				tl.GapSeqs += int(u.Seq - pubs[i-1].Seq - 1)
				t.Errorf("%s's recorder: gap from sequence %d to %d (received %v and %v)", r.node, pubs[i-1].Seq, u.Seq,
					pubs[i-1].At.Format("15:04:05.000"), u.At.Format("15:04:05.000"))
			}
		}
	}
	tl.Published = len(bySeq)
	for k, e := range final.Map {
		if e.Seq > final.Seq {
			t.Fatalf("final map: %q at sequence %d, above the snapshot's %d", k, e.Seq, final.Seq)
		}
		if _, seen := bySeq[e.Seq]; !seen {
			tl.FinalFromStray++
		}
		note(pub{Key: k, Body: e.Body, UUID: e.UUID, Seq: e.Seq}, "in the final map")
	}
	for seq, w := range bySeq {
		if w.at == "in the final map" {
			continue
		}
		e, ok := final.Map[w.u.Key]
		switch {
		case !ok:
			t.Fatalf("%q=%q was %s at sequence %d but is not in the final map (nothing deletes)", w.u.Key, w.u.Body, w.at, seq)
		case e.Seq < seq:
			t.Fatalf("%q=%q was %s at sequence %d; the final map has the older sequence %d (%q)", w.u.Key, w.u.Body, w.at, seq, e.Seq, e.Body)
		case e.Seq > seq:
			tl.Overwritten++
		}
	}
	return tl
}

// pubsSummary is a short line per recorder, for logs.
func pubsSummary(recs []*recorder) string {
	var b strings.Builder
	for _, r := range recs {
		pubs := r.recorded()
		if len(pubs) == 0 {
			fmt.Fprintf(&b, " %s: none;", r.node)
			continue
		}
		fmt.Fprintf(&b, " %s: %d (%d..%d);", r.node, len(pubs), pubs[0].Seq, pubs[len(pubs)-1].Seq)
	}
	return b.String()
}
