package actors

import (
	"log/slog"
	"testing"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
)

// TestCapacity walks a store through its byte and key bounds: what fits is
// admitted and counted, what does not is refused with its reason, and
// overwrites, deletes and expiries give their bytes back.
func TestCapacity(t *testing.T) {
	st := &stats.Server{}
	c := &Capacity{MaxKeys: 3, MaxBytes: 100, Log: &stats.RejectLog{Stats: st, Logger: slog.New(slog.DiscardHandler)}}
	m := kvmap.New()
	apply := func(key, body string) bool {
		msg := kvmsg.Msg{Key: []byte(key), Body: []byte(body)}
		if !c.Admit(m, msg) {
			return false
		}
		m.Apply(msg)
		return true
	}
	steps := []struct {
		key, body string
		ok        bool
		bytes     int64
	}{
		{"a", "0123456789", true, 11},
		{"b", string(make([]byte, 80)), true, 92},
		{"c", "0123456789", false, 92},             // 103 bytes > 100
		{"b", string(make([]byte, 70)), true, 82},  // an overwrite that shrinks
		{"c", "01234567", true, 91},                // fits now
		{"d", "", true, 91},                        // deleting a missing key
		{"d", "x", false, 91},                      // a fourth key
		{"a", "", true, 80},                        // a delete gives back
		{"d", "x", true, 82},                       // and frees a key
		{"d", string(make([]byte, 30)), false, 82}, // an overwrite that grows too much
	}
	for i, s := range steps {
		if got := apply(s.key, s.body); got != s.ok || c.Bytes() != s.bytes {
			t.Fatalf("step %d (%q=%d bytes): admitted %v, %d bytes held; want %v, %d", i, s.key, len(s.body), got, c.Bytes(), s.ok, s.bytes)
		}
	}
	if n := st.RejectedTotal(stats.SourceCollector); n != 3 {
		t.Errorf("%d rejects counted, want 3: %+v", n, st.Rejects())
	}
	var nilCap *Capacity
	if !nilCap.Admit(m, kvmsg.Msg{Key: []byte("z"), Body: []byte("v")}) {
		t.Error("nil capacity refused an update")
	}
}
