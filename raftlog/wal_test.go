package raftlog

import (
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestLogReopensAfterTailTruncation: a follower whose log holds entries
// that a new leader never committed has raft delete its log's tail. raft-wal
// v0.4.0 marked the tail segment sealed without writing its index block, so
// the next start failed on every entry of it ("sealed segment has no index
// block", hashicorp/raft-wal#31): the cluster soak hit it on a node killed
// twice. The log must reopen whole after a tail truncation, and again after
// the tail has been written anew.
func TestLogReopensAfterTailTruncation(t *testing.T) {
	dir := t.TempDir()
	c := Config{Dir: dir}
	c = c.withDefaults()
	openLog := func() *stores {
		t.Helper()
		st, err := openStores(c, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	closeLog := func(st *stores) {
		t.Helper()
		if err := closeInReverse(st.closers); err != nil {
			t.Fatal(err)
		}
	}
	store := func(st *stores, from, to uint64, term uint64) {
		t.Helper()
		var logs []*raft.Log
		for i := from; i <= to; i++ {
			logs = append(logs, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d term %d", i, term)})
		}
		if err := st.logs.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	check := func(st *stores, what string, want map[uint64]uint64) {
		t.Helper()
		last, err := st.logs.LastIndex()
		if err != nil || last != uint64(len(want)) {
			t.Fatalf("%s: last index %d (%v), want %d", what, last, err, len(want))
		}
		for i := uint64(1); i <= last; i++ {
			var l raft.Log
			if err := st.logs.GetLog(i, &l); err != nil {
				t.Fatalf("%s: entry %d: %v", what, i, err)
			}
			if w := fmt.Sprintf("entry %d term %d", i, want[i]); string(l.Data) != w || l.Term != want[i] {
				t.Fatalf("%s: entry %d is %q (term %d), want %q", what, i, l.Data, l.Term, w)
			}
		}
	}
	terms := func(upTo, term2From uint64) map[uint64]uint64 {
		m := map[uint64]uint64{}
		for i := uint64(1); i <= upTo; i++ {
			m[i] = 1
			if term2From > 0 && i >= term2From {
				m[i] = 2
			}
		}
		return m
	}

	st := openLog()
	store(st, 1, 20, 1)
	// What raft does on a conflicting AppendEntries: delete from the first
	// conflicting index to the end.
	if err := st.logs.DeleteRange(15, 20); err != nil {
		t.Fatal(err)
	}
	check(st, "after the truncation", terms(14, 0))
	closeLog(st)

	st = openLog()
	check(st, "reopened after the truncation", terms(14, 0))
	store(st, 15, 25, 2)
	closeLog(st)

	st = openLog()
	defer closeLog(st)
	check(st, "reopened after the new tail", terms(25, 15))
}
