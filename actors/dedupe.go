package actors

import (
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

// Dedupe window defaults (ProposerConfig.DedupeWindow, DedupeAge).
const (
	DefaultDedupeWindow = 100000
	DefaultDedupeAge    = 2 * time.Minute
)

// dedupe is the proposer's window of recent update UUIDs: those this node
// proposed and still waits for, and those the store applied (its
// *Committed feed, on every node). It holds at most max UUIDs, none older
// than maxAge, oldest out first. Only the proposer's goroutine touches it.
type dedupe struct {
	max    int
	maxAge int64 // nanoseconds
	m      map[[kvmsg.UUIDLen]byte]dedupeEntry
	fifo   []dedupeSlot // insertion order; fifo[head:] are live or stale
	head   int
	gen    uint64
}

type dedupeEntry struct {
	gen       uint64
	at        int64 // unix nanoseconds it was added
	committed bool  // applied by the store (not only proposed)
}

type dedupeSlot struct {
	id  [kvmsg.UUIDLen]byte
	gen uint64
	at  int64
}

func newDedupe(max int, maxAge time.Duration) *dedupe {
	if max <= 0 {
		return nil // off
	}
	return &dedupe{max: max, maxAge: int64(maxAge), m: make(map[[kvmsg.UUIDLen]byte]dedupeEntry)}
}

// key returns uuid as a map key; false for an empty (or odd) UUID, which is
// never deduplicated.
func dedupeKey(uuid []byte) ([kvmsg.UUIDLen]byte, bool) {
	var k [kvmsg.UUIDLen]byte
	if len(uuid) != kvmsg.UUIDLen {
		return k, false
	}
	copy(k[:], uuid)
	return k, true
}

// seen reports whether uuid is in the window; committedOnly counts only
// UUIDs the store applied.
func (d *dedupe) seen(uuid []byte, now int64, committedOnly bool) bool {
	if d == nil {
		return false
	}
	k, ok := dedupeKey(uuid)
	if !ok {
		return false
	}
	e, ok := d.m[k]
	if !ok || (d.maxAge > 0 && now-e.at > d.maxAge) {
		return false
	}
	return e.committed || !committedOnly
}

// add puts uuid in the window (committed: the store applied it). A UUID
// already there keeps its place and becomes committed if this one is.
func (d *dedupe) add(uuid []byte, now int64, committed bool) {
	if d == nil {
		return
	}
	k, ok := dedupeKey(uuid)
	if !ok {
		return
	}
	if e, ok := d.m[k]; ok && (d.maxAge <= 0 || now-e.at <= d.maxAge) {
		if committed && !e.committed {
			e.committed = true
			d.m[k] = e
		}
		return
	}
	d.evict(now, 1)
	d.gen++
	d.m[k] = dedupeEntry{gen: d.gen, at: now, committed: committed}
	d.fifo = append(d.fifo, dedupeSlot{id: k, gen: d.gen, at: now})
}

// forget takes uuid out of the window unless the store applied it: its
// proposal failed, so a later copy must not be taken for a duplicate.
func (d *dedupe) forget(uuid []byte) {
	if d == nil {
		return
	}
	if k, ok := dedupeKey(uuid); ok {
		if e, ok := d.m[k]; ok && !e.committed {
			delete(d.m, k)
		}
	}
}

// evict drops the oldest UUIDs until room more fit and none is too old.
func (d *dedupe) evict(now int64, room int) {
	for d.head < len(d.fifo) {
		s := d.fifo[d.head]
		if e, ok := d.m[s.id]; !ok || e.gen != s.gen {
			d.head++ // forgotten or re-added since: a stale slot
			continue
		}
		if len(d.m)+room <= d.max && (d.maxAge <= 0 || now-s.at <= d.maxAge) {
			break
		}
		delete(d.m, s.id)
		d.head++
	}
	if len(d.fifo)-d.head > 2*d.max {
		// Many slots went stale (forgotten, then added again): keep the
		// live ones only, in order.
		live := d.fifo[:0]
		for _, s := range d.fifo[d.head:] {
			if e, ok := d.m[s.id]; ok && e.gen == s.gen {
				live = append(live, s)
			}
		}
		clear(d.fifo[len(live):])
		d.fifo, d.head = live, 0
	}
	if d.head > 1024 && d.head > len(d.fifo)/2 {
		n := copy(d.fifo, d.fifo[d.head:])
		clear(d.fifo[n:])
		d.fifo = d.fifo[:n]
		d.head = 0
	}
}

// len returns how many UUIDs the window holds.
func (d *dedupe) len() int {
	if d == nil {
		return 0
	}
	return len(d.m)
}
