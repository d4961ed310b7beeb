package window

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

func msg(seq int64, key string, body string) kvmsg.Msg {
	m := kvmsg.Msg{Key: []byte(key), Seq: seq, Body: []byte(body)}
	if seq%3 == 0 {
		m.UUID = []byte("0123456789abcdef")
		m.Props = []byte("ttl=5\n")
	}
	return m
}

func fill(t *testing.T, w *Window, from, to int64) {
	t.Helper()
	for s := from; s <= to; s++ {
		if err := w.Append(msg(s, fmt.Sprintf("k/%d", s%7), fmt.Sprintf("value-%d", s)), time.Unix(0, s)); err != nil {
			t.Fatal(err)
		}
	}
}

func collect(v *View, since int64, prefix string) []Record {
	var out []Record
	c := v.Cursor(since, []byte(prefix))
	for {
		r, ok := c.Next()
		if !ok {
			return out
		}
		out = append(out, r)
	}
}

func TestAppendCursor(t *testing.T) {
	w := New(0, 10)
	if err := w.Append(msg(12, "a", "x"), time.Now()); err == nil {
		t.Fatal("a gap was accepted")
	}
	fill(t, w, 11, 5000)
	v := w.View()
	if v.Base() != 10 || v.Seq() != 5000 || !v.Covers(10) || v.Covers(9) || v.Covers(5001) {
		t.Fatalf("view (%d, %d]", v.Base(), v.Seq())
	}
	for _, since := range []int64{10, 11, 999, 4999, 5000} {
		got := collect(v, since, "")
		if int64(len(got)) != 5000-since {
			t.Fatalf("since %d: %d records", since, len(got))
		}
		for i, r := range got {
			want := msg(since+1+int64(i), fmt.Sprintf("k/%d", (since+1+int64(i))%7), fmt.Sprintf("value-%d", since+1+int64(i)))
			if r.Seq != want.Seq || !bytes.Equal(r.Key, want.Key) || !bytes.Equal(r.UUID, want.UUID) || !bytes.Equal(r.Props, want.Props) || !bytes.Equal(r.Body, want.Body) {
				t.Fatalf("since %d record %d: %+v, want %+v", since, i, r, want)
			}
		}
	}
	got := collect(v, 100, "k/3")
	for _, r := range got {
		if r.Seq%7 != 3 {
			t.Fatalf("prefix k/3 gave %q", r.Key)
		}
	}
	if want := (5000-100)/7 + 1; len(got) < want-1 || len(got) > want {
		t.Fatalf("prefix: %d records, about %d expected", len(got), want)
	}
}

// A view sees the window as it was, while appends and drops go on.
func TestViewIsStable(t *testing.T) {
	w := New(64<<10, 0)
	fill(t, w, 1, 300)
	v := w.View()
	before := collect(v, v.Base(), "")
	done := make(chan []Record)
	go func() { done <- collect(v, v.Base(), "") }()
	fill(t, w, 301, 20000)
	after := <-done
	if len(before) != int(v.Len()) || len(after) != len(before) {
		t.Fatalf("view of %d: %d then %d records", v.Len(), len(before), len(after))
	}
	for i := range before {
		if before[i].Seq != after[i].Seq || !bytes.Equal(before[i].Body, after[i].Body) {
			t.Fatalf("record %d changed", i)
		}
	}
	if w.Base() <= 300 {
		t.Fatalf("window base %d: nothing dropped", w.Base())
	}
}

func TestByteBound(t *testing.T) {
	const limit = 64 << 10
	w := New(limit, 0)
	fill(t, w, 1, 50000)
	if w.Bytes() > limit {
		t.Fatalf("%d bytes, bound %d", w.Bytes(), limit)
	}
	if w.Bytes() < limit-2*int64(w.chunkBytes)-1024 {
		t.Fatalf("%d bytes: far below the bound %d (chunk %d)", w.Bytes(), limit, w.chunkBytes)
	}
	var sum int64
	for _, c := range w.chunks {
		sum += c.bytes()
	}
	if sum != w.Bytes() {
		t.Fatalf("chunks hold %d bytes, window says %d", sum, w.Bytes())
	}
	if first := w.chunks[0].idx[0].seq; first != w.Base()+1 {
		t.Fatalf("first retained %d, base %d", first, w.Base())
	}
	if w.Oldest() != time.Unix(0, w.Base()+1) {
		t.Fatalf("oldest %v, want the time of %d", w.Oldest(), w.Base()+1)
	}
	// One update larger than the bound empties the window.
	big := kvmsg.Msg{Key: []byte("big"), Seq: 50001, Body: make([]byte, 2*limit)}
	if err := w.Append(big, time.Now()); err != nil {
		t.Fatal(err)
	}
	if w.Base() != 50001 || w.Bytes() != 0 || w.View().Len() != 0 {
		t.Fatalf("after an oversized update: base %d, %d bytes", w.Base(), w.Bytes())
	}
	fill(t, w, 50002, 50010)
	if got := collect(w.View(), 50001, ""); len(got) != 9 {
		t.Fatalf("%d records after the oversized one", len(got))
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	w := New(32<<10, 7)
	fill(t, w, 8, 3000)
	v := w.View()
	var buf bytes.Buffer
	if _, err := v.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	r, err := Read(bufio.NewReader(bytes.NewReader(buf.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	r.SetLimit(32 << 10)
	if r.Base() != w.Base() || r.Seq() != w.Seq() || r.Bytes() != w.Bytes() || r.Chunks() != w.Chunks() || !r.Oldest().Equal(w.Oldest()) {
		t.Fatalf("read (%d, %d] %d bytes %d chunks, wrote (%d, %d] %d bytes %d chunks",
			r.Base(), r.Seq(), r.Bytes(), r.Chunks(), w.Base(), w.Seq(), w.Bytes(), w.Chunks())
	}
	a, b := collect(v, v.Base(), ""), collect(r.View(), r.Base(), "")
	if len(a) != len(b) {
		t.Fatalf("%d records read back, %d written", len(b), len(a))
	}
	for i := range a {
		if fmt.Sprint(a[i]) != fmt.Sprint(b[i]) {
			t.Fatalf("record %d: %v, wrote %v", i, b[i], a[i])
		}
	}
	// Both go on the same way: same chunks, same drops.
	fill(t, w, 3001, 6000)
	fill(t, r, 3001, 6000)
	if r.Base() != w.Base() || r.Chunks() != w.Chunks() || r.Bytes() != w.Bytes() {
		t.Fatalf("after more updates: read base %d (%d chunks), written base %d (%d chunks)", r.Base(), r.Chunks(), w.Base(), w.Chunks())
	}
	for cut := 0; cut < buf.Len(); cut += 97 {
		if _, err := Read(bufio.NewReader(bytes.NewReader(buf.Bytes()[:cut]))); err == nil {
			t.Fatalf("a window cut at %d of %d bytes decoded", cut, buf.Len())
		}
	}
	// An empty window.
	buf.Reset()
	if _, err := New(0, 42).View().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	e, err := Read(bufio.NewReader(&buf))
	if err != nil || e.Base() != 42 || e.Seq() != 42 || e.Chunks() != 0 {
		t.Fatalf("empty window: %v, %+v", err, e)
	}
}
