package raftlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
)

func TestEntryRoundTrip(t *testing.T) {
	ops := []Op{
		{Kind: OpSet, Msg: kvmsg.Msg{Key: []byte("/a"), UUID: bytes.Repeat([]byte{7}, 16), Props: []byte("ttl=5\n"), Body: []byte("v")}, TTLNanos: 5e9, Expires: 1234567890123},
		{Kind: OpSet, Msg: kvmsg.Msg{Key: []byte("/b")}}, // a delete
		{Kind: OpExpire, Msg: kvmsg.Msg{Key: []byte("/c")}, Seq: 42},
	}
	e, err := Decode(AppendOps(nil, 99, ops))
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != KindOps || e.Proposal != 99 || len(e.Ops) != 3 {
		t.Fatalf("decoded %+v", e)
	}
	for i := range ops {
		g, w := e.Ops[i], ops[i]
		if g.Kind != w.Kind || !bytes.Equal(g.Msg.Key, w.Msg.Key) || !bytes.Equal(g.Msg.UUID, w.Msg.UUID) ||
			!bytes.Equal(g.Msg.Props, w.Msg.Props) || !bytes.Equal(g.Msg.Body, w.Msg.Body) ||
			g.TTLNanos != w.TTLNanos || g.Expires != w.Expires || g.Seq != w.Seq {
			t.Errorf("op %d: got %+v, want %+v", i, g, w)
		}
	}
	h, err := Decode(EncodeHistory("0123456789abcdef0123456789abcdef"))
	if err != nil || h.Kind != KindHistory || h.History != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("history entry: %+v %v", h, err)
	}
	data := AppendOps(nil, 1, ops)
	for n := range len(data) {
		if _, err := Decode(data[:n]); !errors.Is(err, ErrEntry) {
			t.Fatalf("truncated to %d of %d bytes: err %v", n, len(data), err)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	m := kvmap.New()
	for i := range 1000 {
		m.ApplyExpiring(kvmsg.Msg{Key: fmt.Appendf(nil, "/k/%04d", i), Seq: int64(i + 1), Props: []byte("p=1\n"), Body: []byte("v")}, int64(i%3)*1e18)
	}
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, State{Seq: 1000, History: "h", Map: m.View()}); err != nil {
		t.Fatal(err)
	}
	r, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 1000 || r.History != "h" || r.Map.Len() != 1000 {
		t.Fatalf("restored seq %d history %q keys %d", r.Seq, r.History, r.Map.Len())
	}
	m.View().Ascend(nil, func(e kvmap.Entry) bool {
		g, ok := r.Map.Get(e.Key())
		if !ok || g.Seq() != e.Seq() || g.Expires() != e.Expires() || !bytes.Equal(g.Body(), e.Body()) || !bytes.Equal(g.Props(), e.Props()) {
			t.Fatalf("key %q: restored %v %d %d, want %d %d", e.Key(), ok, g.Seq(), g.Expires(), e.Seq(), e.Expires())
		}
		return true
	})
	for _, n := range []int{0, 5, len(buf.Bytes()) / 2, len(buf.Bytes()) - 1} {
		if _, err := ReadSnapshot(bytes.NewReader(buf.Bytes()[:n])); !errors.Is(err, errSnapshot) {
			t.Errorf("snapshot cut to %d bytes: %v", n, err)
		}
	}
}

// memStore is a Store applying entries to a map directly.
type memStore struct {
	mu      sync.Mutex
	seq     int64
	history string
	m       *kvmap.Map
}

func (s *memStore) Apply(b *Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range b.Entries {
		if a.Kind == KindHistory && s.history == "" {
			s.history = a.History
		}
		for _, op := range a.Ops {
			s.seq++
			msg := op.Msg
			msg.Seq = s.seq
			s.m.ApplyExpiring(msg, op.Expires)
		}
	}
}

func (s *memStore) State() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return State{Seq: s.seq, History: s.history, Map: s.m.View()}, nil
}

func (s *memStore) Restore(r Restored) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq, s.history, s.m = r.Seq, r.History, r.Map
	return nil
}

func open(t *testing.T, dir string) (*Node, *memStore) {
	t.Helper()
	st := &memStore{m: kvmap.New()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Open(ctx, Config{Dir: dir, Store: st, SnapshotThreshold: 1 << 40, SnapshotInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return n, st
}

// TestReopen: entries and the history id survive Close and Open, with and
// without a snapshot; a second Open of a directory in use fails at once.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	n, st := open(t, dir)
	hist := n.History()
	if len(hist) != 32 {
		t.Fatalf("history %q", hist)
	}
	if _, err := Open(context.Background(), Config{Dir: dir, Store: &memStore{m: kvmap.New()}}); err == nil {
		t.Fatal("second Open of a directory in use succeeded")
	}
	apply := func(n *Node, from, to int) {
		for i := from; i < to; i++ {
			op := Op{Kind: OpSet, Msg: kvmsg.Msg{Key: fmt.Appendf(nil, "/k/%d", i), Body: []byte("v")}}
			if err := n.Apply(AppendOps(nil, 0, []Op{op})).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(n, 0, 100)
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, st2 := open(t, dir)
	if n.History() != hist || st2.seq != st.seq || st2.m.Len() != 100 {
		t.Fatalf("reopened: history %q seq %d keys %d; want %q %d 100", n.History(), st2.seq, st2.m.Len(), hist, st.seq)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	apply(n, 100, 150)
	n.Close(context.Background())
	n, st3 := open(t, dir)
	defer n.Close(context.Background())
	if n.History() != hist || st3.seq != 150 || st3.m.Len() != 150 {
		t.Fatalf("reopened after snapshot: history %q seq %d keys %d", n.History(), st3.seq, st3.m.Len())
	}
}

// TestDamagedSnapshotRefused: a snapshot whose state file is damaged stops
// Open with an error naming the file.
func TestDamagedSnapshotRefused(t *testing.T) {
	dir := t.TempDir()
	n, _ := open(t, dir)
	op := Op{Kind: OpSet, Msg: kvmsg.Msg{Key: []byte("/k"), Body: []byte("v")}}
	if err := n.Apply(AppendOps(nil, 0, []Op{op})).Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	n.Close(context.Background())
	// Close took one more snapshot: damage them all.
	files, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if len(files) == 0 {
		t.Fatal("no snapshot files")
	}
	for _, path := range files {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		f.ReadAt(b, 3)
		b[0] ^= 0xff
		f.WriteAt(b, 3)
		f.Close()
	}
	_, err := Open(context.Background(), Config{Dir: dir, Store: &memStore{m: kvmap.New()}})
	named := false
	for _, path := range files {
		named = named || (err != nil && strings.Contains(err.Error(), path))
	}
	if !named {
		t.Fatalf("Open of a damaged snapshot: %v, want an error naming one of %v", err, files)
	}
}

// TestMemoryLogBounded: in memory the node keeps a bounded tail of its log
// (it compacts behind discarded snapshots) and keeps no copy of the map,
// while every entry still reaches the store.
func TestMemoryLogBounded(t *testing.T) {
	st := &memStore{m: kvmap.New()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Open(ctx, Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	const total = 6000 // several times the memory defaults' threshold + trailing
	body := bytes.Repeat([]byte("b"), 1024)
	futures := make([]interface{ Error() error }, 0, 256)
	for i := range total {
		op := Op{Kind: OpSet, Msg: kvmsg.Msg{Key: fmt.Appendf(nil, "/k/%d", i%100), Body: body}}
		futures = append(futures, n.Apply(AppendOps(nil, 0, []Op{op})))
		if len(futures) == cap(futures) || i == total-1 {
			for _, f := range futures {
				if err := f.Error(); err != nil {
					t.Fatal(err)
				}
			}
			futures = futures[:0]
		}
	}
	st.mu.Lock()
	seq, keys := st.seq, st.m.Len()
	st.mu.Unlock()
	if seq != total || keys != 100 {
		t.Fatalf("store seq %d keys %d, want %d 100", seq, keys, total)
	}
	// The memory defaults (threshold 1024 + trailing 128) fit well inside
	// this; the disk defaults (8192 + 10240) would keep all 6000.
	const bound = 2048
	held := func() uint64 {
		first, _ := n.logs.FirstIndex()
		last, _ := n.logs.LastIndex()
		return last - first + 1
	}
	deadline := time.Now().Add(30 * time.Second)
	for held() > bound && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // raft's snapshot timer, at most 2 x 250ms
	}
	if h := held(); h > bound {
		t.Fatalf("memory log holds %d entries after %d applied, want at most %d", h, total, bound)
	}
	if list, err := n.snaps.List(); err != nil || len(list) != 0 {
		t.Fatalf("memory snapshot store keeps %d snapshots (err %v), want none", len(list), err)
	}
	// The node still takes new entries after compaction.
	op := Op{Kind: OpSet, Msg: kvmsg.Msg{Key: []byte("/after"), Body: []byte("v")}}
	if err := n.Apply(AppendOps(nil, 0, []Op{op})).Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.Barrier(); err != nil {
		t.Fatal(err)
	}
}
