package actors

import (
	"fmt"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

func update(key string, seq int64, expires time.Time) *Update {
	return &Update{Msg: kvmsg.Msg{Key: []byte(key), Seq: seq, Body: []byte("v")}, ExpiresAt: expires}
}

func TestExpiryIndexTracksOnlyTTLKeys(t *testing.T) {
	var x expiryIndex
	now := time.Unix(1000, 0)
	x.track(update("a", 1, now.Add(time.Second)))
	x.track(update("b", 2, time.Time{})) // no ttl: never indexed
	x.track(update("c", 3, now.Add(3*time.Second)))
	x.track(update("a", 4, now.Add(5*time.Second))) // overwrite moves a
	x.track(update("c", 5, time.Time{}))            // overwrite without ttl removes c
	if x.Len() != 1 {
		t.Fatalf("index holds %d keys, want 1 (a)", x.Len())
	}
	if due := x.popDue(now.Add(4*time.Second), 1<<30); len(due) != 0 {
		t.Fatalf("due at +4s: %v (a was moved to +5s)", due)
	}
	due := x.popDue(now.Add(5*time.Second), 1<<30)
	if len(due) != 1 || string(due[0].Key) != "a" || due[0].Seq != 4 {
		t.Fatalf("due at +5s: %+v, want a@4", due)
	}
	if x.Len() != 0 || len(x.byKey) != 0 {
		t.Fatalf("index not empty after pop: %d/%d", x.Len(), len(x.byKey))
	}
}

func TestExpiryIndexOrder(t *testing.T) {
	var x expiryIndex
	now := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		x.track(update(fmt.Sprint(i), int64(i+1), now.Add(time.Duration((i*37)%100)*time.Millisecond)))
	}
	due := x.popDue(now.Add(49*time.Millisecond), 1<<30)
	if len(due) != 50 {
		t.Fatalf("%d due, want 50", len(due))
	}
	if rest := x.popDue(now.Add(time.Hour), 1<<30); len(rest) != 50 {
		t.Fatalf("%d left, want 50", len(rest))
	}
}

// TestReaperTickDoesNotGrowWithKeys: with a million keys indexed and none
// due, a tick is a look at the heap's top, not a scan.
func TestReaperTickDoesNotGrowWithKeys(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	var x expiryIndex
	now := time.Unix(1000, 0)
	for i := 0; i < n; i++ {
		x.track(update(fmt.Sprintf("/k/%07d", i), int64(i+1), now.Add(time.Hour+time.Duration(i))))
	}
	const ticks = 1000
	start := time.Now()
	for i := 0; i < ticks; i++ {
		if due := x.popDue(now.Add(time.Duration(i)*time.Millisecond), 1<<30); len(due) != 0 {
			t.Fatalf("tick %d expired %d keys", i, len(due))
		}
	}
	per := time.Since(start) / ticks
	t.Logf("tick with %d keys indexed, none due: %v", n, per)
	// A scan of n keys takes milliseconds; a heap peek takes nanoseconds.
	// 100µs leaves room for a loaded, race-instrumented machine.
	if per > 100*time.Microsecond {
		t.Errorf("tick took %v with %d keys indexed and none due", per, n)
	}
}
