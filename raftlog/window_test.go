package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/window"
)

// A snapshot with a resume window (version 2) gives back the same window:
// the same sequences, in the same chunks.
func TestSnapshotWindowRoundTrip(t *testing.T) {
	m := kvmap.New()
	w := window.New(16<<10, 0)
	for i := range 2000 {
		msg := kvmsg.Msg{Key: fmt.Appendf(nil, "/k/%04d", i%300), Seq: int64(i + 1), UUID: []byte("0123456789abcdef"), Body: fmt.Appendf(nil, "v%d", i)}
		if i%10 == 9 {
			msg.Body = nil // a delete
			m.Delete(msg.Key)
		} else {
			m.Apply(msg)
		}
		if err := w.Append(msg, time.Unix(0, int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, State{Seq: 2000, History: "h", Map: m.View(), Window: w.View()}); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte(snapshotMagicV2)) || !bytes.HasSuffix(buf.Bytes(), []byte(snapshotMagicV2)) {
		t.Fatalf("a snapshot with a window does not say version 2: %q", buf.Bytes()[:len(snapshotMagicV2)])
	}
	r, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 2000 || r.Map.Len() != m.Len() || r.Window == nil {
		t.Fatalf("restored seq %d keys %d window %v", r.Seq, r.Map.Len(), r.Window)
	}
	r.Window.SetLimit(16 << 10)
	if r.Window.Base() != w.Base() || r.Window.Seq() != w.Seq() || r.Window.Chunks() != w.Chunks() || r.Window.Bytes() != w.Bytes() {
		t.Fatalf("window (%d, %d] %d chunks, wrote (%d, %d] %d chunks", r.Window.Base(), r.Window.Seq(), r.Window.Chunks(), w.Base(), w.Seq(), w.Chunks())
	}
	a, b := w.View().Cursor(w.Base(), nil), r.Window.View().Cursor(w.Base(), nil)
	for {
		x, okx := a.Next()
		y, oky := b.Next()
		if okx != oky {
			t.Fatalf("window lengths differ at %d", x.Seq)
		}
		if !okx {
			break
		}
		if fmt.Sprint(x) != fmt.Sprint(y) {
			t.Fatalf("window record %v, wrote %v", y, x)
		}
	}
	for _, n := range []int{len(buf.Bytes()) - len(snapshotMagicV2) - 3, len(buf.Bytes()) - 1} {
		if _, err := ReadSnapshot(bytes.NewReader(buf.Bytes()[:n])); !errors.Is(err, errSnapshot) {
			t.Errorf("snapshot cut to %d bytes: %v", n, err)
		}
	}
	// A window that does not end at the snapshot's sequence is damage.
	buf.Reset()
	if err := writeSnapshot(&buf, State{Seq: 2001, History: "h", Map: m.View(), Window: w.View()}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSnapshot(bytes.NewReader(buf.Bytes())); !errors.Is(err, errSnapshot) {
		t.Errorf("a window ending before the snapshot: %v", err)
	}
}

// A version 1 snapshot (written before the window existed, or with resume
// off) still loads, without a window; with resume off the server still
// writes exactly that format.
func TestSnapshotVersion1Loads(t *testing.T) {
	// Written out by hand: sequence 5, history "h", one key "k" = "v" at 5.
	old := []byte("clonekv-fsm-1\n\x05\x01h\x01" + "\x01k" + "\x00" + "\x00" + "\x01v" + "\x0a" + "\x00" + "clonekv-fsm-1\n")
	r, err := ReadSnapshot(bytes.NewReader(old))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := r.Map.Get([]byte("k"))
	if r.Seq != 5 || r.History != "h" || r.Window != nil || !ok || string(e.Body()) != "v" || e.Seq() != 5 {
		t.Fatalf("restored seq %d history %q window %v key %v", r.Seq, r.History, r.Window, ok)
	}
	m := kvmap.New()
	m.Apply(kvmsg.Msg{Key: []byte("k"), Seq: 5, Body: []byte("v")})
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, State{Seq: 5, History: "h", Map: m.View()}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), old) {
		t.Fatalf("without a window the snapshot is\n%q, want version 1\n%q", buf.Bytes(), old)
	}
	// A version 1 header with a version 2 trailer is damage.
	mixed := append(bytes.TrimSuffix(bytes.Clone(old), []byte(snapshotMagic)), snapshotMagicV2...)
	if _, err := ReadSnapshot(bytes.NewReader(mixed)); !errors.Is(err, errSnapshot) {
		t.Fatalf("mixed versions: %v", err)
	}
}
