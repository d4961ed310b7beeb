// Package kvmap is the Clone key-value map: an ordered map from key to the
// last message stored under it, with O(1) copy-on-write views.
//
// One goroutine (the store actor on the server, the client's owner goroutine
// on a client) owns a Map and mutates it; View hands out an immutable
// snapshot in O(1) that any other goroutine may read while the owner keeps
// writing. Reading a subtree is a range scan over the keys with that prefix,
// not a scan of the whole map.
//
// Memory is laid out for the garbage collector. Every message is stored as
// one record in an append-only slab (a []byte of up to 1 MiB, which the GC
// marks without scanning), and the ordered index is a B-tree whose items are
// a slab number and an offset (8 bytes, no pointer). The GC's work per cycle
// is therefore the B-tree's nodes, about one per hundred keys, however many
// keys are held: a million keys cost it some ten thousand small objects
// instead of a million pointers.
//
// Overwritten and deleted records become garbage in their slabs. When the
// garbage passes a quarter of the slab bytes (and 256 KiB), the map
// compacts incrementally: each mutation also moves the live records of a
// bounded stretch of the emptiest slab into the current one, and a slab
// whose records have all moved (or died) is dropped from the map. A view
// keeps the slab table it was taken with, so the slabs it reads stay alive
// (the GC frees them when the last view and the last Entry pointing into
// them are gone) and compaction never changes what a view sees.
package kvmap

import (
	"bytes"
	"math"
	"slices"

	"github.com/clonekv/clonekv/kvmsg"
)

const (
	minSlab = 4 << 10 // first slab of a map; slabs grow with the map
	maxSlab = 1 << 20 // slab size once the map holds 8 MiB or more
	// A record larger than ownSlab gets a slab of its own, so that a big
	// value wastes no tail space and is freed as soon as it dies.
	ownSlab = maxSlab / 8

	// Compaction starts when garbage exceeds garbageRatio of the slab
	// bytes and minGarbage bytes.
	garbageRatio = 0.25
	minGarbage   = 256 << 10
	// Each mutation scans up to stepFactor times the bytes it wrote (and at
	// least stepMin) of the slab being compacted, and at most stepRecords
	// records: at garbageRatio the oldest slab frees at least a quarter of
	// what is scanned, so compaction outpaces the garbage, and the work per
	// mutation stays bounded (a few microseconds).
	stepFactor  = 4
	stepMin     = 256
	stepRecords = 16
)

// slabMeta is the map's bookkeeping for one slab (views never read it).
type slabMeta struct {
	used int // bytes written
	live int // bytes of records the map's index points to
}

// Map is the mutable map. It is not safe for concurrent use: one owner
// mutates it; others read Views. Get may run concurrently with other Gets.
type Map struct {
	t          tree
	meta       []slabMeta // by slab number; used == 0 for a free number
	free       []uint32   // slab numbers not in use
	shared     bool       // t.slabs is shared with a view: copy before writing
	active     int        // slab appended to, or -1
	usedBytes  int        // sum of meta[*].used
	liveBytes  int        // sum of meta[*].live
	victim     int        // slab being compacted, or -1
	victimPos  int        // next record of the victim to look at
	compacted  int64      // records moved by compaction, ever
	slabsFreed int64      // slabs dropped, ever
}

// New returns an empty map.
func New() *Map {
	return &Map{t: tree{gen: 1}, active: -1, victim: -1}
}

// Apply stores m under its key, or deletes the key when m's body is empty
// (the Clone protocol's delete). It copies m's bytes; m may be reused.
func (m *Map) Apply(msg kvmsg.Msg) { m.ApplyExpiring(msg, 0) }

// ApplyExpiring is Apply for an update that expires at the absolute time
// expires (unix nanoseconds; 0 = never), kept with the entry.
func (m *Map) ApplyExpiring(msg kvmsg.Msg, expires int64) {
	if msg.IsDelete() {
		m.Delete(msg.Key)
		return
	}
	size := recordSize(msg, expires)
	it := m.alloc(size)
	s := m.t.slabs[it.slab]
	appendRecord(s[it.off:it.off:int(it.off)+size], msg, expires)
	m.meta[it.slab].live += size
	m.liveBytes += size
	if old, replaced := m.t.set(msg.Key, it); replaced {
		m.release(old)
	}
	m.step(size)
}

// Load is ApplyExpiring for input in key order (a snapshot being read
// back). The tree already fills its nodes when keys arrive in order, so it
// needs no path of its own; it stays a name of its own for the restore code.
func (m *Map) Load(msg kvmsg.Msg, expires int64) { m.ApplyExpiring(msg, expires) }

// Delete removes key and reports whether it was there.
func (m *Map) Delete(key []byte) bool {
	old, ok := m.t.del(key)
	if !ok {
		return false
	}
	size := m.release(old)
	m.step(size)
	return true
}

// Get returns the entry stored under key.
func (m *Map) Get(key []byte) (Entry, bool) { return m.t.getEntry(key) }

// Len returns the number of keys stored.
func (m *Map) Len() int { return m.t.length }

// Clear removes every key.
func (m *Map) Clear() { *m = *New() }

// View returns an immutable snapshot of the map in O(1). Later changes to m
// (compaction included) are not visible through it, and it may be read
// from any goroutine (one goroutine at a time per View) while m's owner
// keeps writing. A view keeps the slabs it reads alive until it is
// unreachable.
func (m *Map) View() *View {
	v := &View{t: m.t}
	m.t.gen++ // every node is now shared with v
	m.shared = true
	return v
}

// Stats describes a map's storage.
type Stats struct {
	Keys       int   // keys stored
	Slabs      int   // slabs the map uses
	SlabBytes  int   // bytes written to them
	LiveBytes  int   // bytes of the records the map holds; the rest is garbage
	Compacting bool  // a compaction is in progress
	Moved      int64 // records moved by compaction, ever
	SlabsFreed int64 // slabs dropped (emptied or compacted), ever
}

// Stats returns the map's storage figures.
func (m *Map) Stats() Stats {
	return Stats{
		Keys: m.t.length, Slabs: len(m.meta) - len(m.free), SlabBytes: m.usedBytes, LiveBytes: m.liveBytes,
		Compacting: m.victim >= 0, Moved: m.compacted, SlabsFreed: m.slabsFreed,
	}
}

// Compact compacts every slab that holds garbage, now: afterwards the slab
// bytes are the live bytes plus at most the current slab's garbage. It
// takes time in proportion to the map's size, so the owner should call it
// only when a pause is acceptable (mutations compact incrementally anyway).
func (m *Map) Compact() {
	for {
		if m.victim < 0 && !m.pickVictim(0) {
			return
		}
		m.compactSome(math.MaxInt, math.MaxInt)
	}
}

// alloc reserves size bytes in a slab and returns where.
func (m *Map) alloc(size int) item {
	if size > math.MaxUint32 {
		panic("kvmap: record over 4 GiB")
	}
	if size > ownSlab {
		n := m.newSlab(size)
		m.meta[n].used = size
		m.usedBytes += size
		return item{slab: uint32(n)}
	}
	if m.active < 0 || m.meta[m.active].used+size > len(m.t.slabs[m.active]) {
		m.active = m.newSlab(max(slabSize(m.liveBytes), size))
	}
	off := m.meta[m.active].used
	m.meta[m.active].used += size
	m.usedBytes += size
	return item{slab: uint32(m.active), off: uint32(off)}
}

// slabSize is the size of the next slab of a map holding live bytes: an
// eighth of them (a power of two between minSlab and maxSlab), so that
// small maps stay small and big ones have few slabs.
func slabSize(live int) int {
	want := minSlab
	for want < maxSlab && want < live/8 {
		want *= 2
	}
	return want
}

// newSlab allocates a slab of size bytes and returns its number.
func (m *Map) newSlab(size int) int {
	m.ownSlabs()
	b := make([]byte, size)
	if k := len(m.free); k > 0 {
		n := m.free[k-1]
		m.free = m.free[:k-1]
		m.t.slabs[n] = b
		return int(n)
	}
	m.t.slabs = append(m.t.slabs, b)
	m.meta = append(m.meta, slabMeta{})
	if len(m.t.slabs) > math.MaxUint32 {
		panic("kvmap: too many slabs")
	}
	return len(m.t.slabs) - 1
}

// ownSlabs makes the slab table private to the map before it is written:
// views keep the table they were taken with.
func (m *Map) ownSlabs() {
	if m.shared {
		m.t.slabs = slices.Clip(slices.Clone(m.t.slabs))
		m.shared = false
	}
}

// release accounts for the record at it leaving the index and returns its
// size. A slab left with no live record is dropped at once.
func (m *Map) release(it item) int {
	_, size := decodeRecord(m.t.recordAt(it))
	n := int(it.slab)
	m.meta[n].live -= size
	m.liveBytes -= size
	if m.meta[n].live == 0 && n != m.active {
		m.dropSlab(n)
	}
	return size
}

// dropSlab removes slab n from the map (views that hold it keep it).
func (m *Map) dropSlab(n int) {
	m.ownSlabs()
	m.t.slabs[n] = nil
	m.usedBytes -= m.meta[n].used
	m.meta[n] = slabMeta{}
	m.free = append(m.free, uint32(n))
	m.slabsFreed++
	if n == m.victim {
		m.victim = -1
	}
}

// step does the compaction work owed for a mutation of size bytes.
func (m *Map) step(size int) {
	if m.victim < 0 {
		garbage := m.usedBytes - m.liveBytes
		if garbage < minGarbage || float64(garbage) < garbageRatio*float64(m.usedBytes) {
			return
		}
		if !m.pickVictim(minGarbage / 16) {
			return
		}
	}
	m.compactSome(max(stepFactor*size, stepMin), stepRecords)
}

// pickVictim chooses the slab with the most garbage (not the current one,
// and with more than minWaste bytes of garbage) for compaction.
func (m *Map) pickVictim(minWaste int) bool {
	best, waste := -1, minWaste
	for n, s := range m.meta {
		if n == m.active || s.used == 0 {
			continue
		}
		if g := s.used - s.live; g > waste {
			best, waste = n, g
		}
	}
	if best < 0 {
		return false
	}
	m.victim, m.victimPos = best, 0
	return true
}

// compactSome walks the victim's records from victimPos, moving each one
// the index still points to into the current slab, until it has looked at
// maxBytes bytes or maxRecords records. When the victim has no live record
// left it is dropped.
func (m *Map) compactSome(maxBytes, maxRecords int) {
	v := m.victim
	slab := m.t.slabs[v]
	used := m.meta[v].used
	for scanned, records := 0, 0; scanned < maxBytes && records < maxRecords && m.victimPos < used && m.meta[v].live > 0; records++ {
		off := m.victimPos
		rec := slab[off:used]
		_, size := decodeRecord(rec)
		m.victimPos += size
		scanned += size
		key := recordKey(rec)
		cur, ok := m.t.get(key)
		if !ok || cur != (item{slab: uint32(v), off: uint32(off)}) {
			continue // overwritten or deleted since: garbage
		}
		it := m.alloc(size)
		copy(m.t.slabs[it.slab][it.off:], rec[:size])
		m.meta[it.slab].live += size
		m.meta[v].live -= size
		m.t.set(key, it)
		m.compacted++
	}
	if m.meta[v].live == 0 {
		m.dropSlab(v)
	} else if m.victimPos >= used {
		panic("kvmap: compaction walked a slab and left live records in it")
	}
}

// View is an immutable snapshot of a Map.
type View struct {
	t tree
}

// Len returns the number of keys in the view.
func (v *View) Len() int { return v.t.length }

// Get returns the entry stored under key in the view.
func (v *View) Get(key []byte) (Entry, bool) { return v.t.getEntry(key) }

func (t *tree) getEntry(key []byte) (Entry, bool) {
	it, ok := t.get(key)
	if !ok {
		return Entry{}, false
	}
	e, _ := decodeRecord(t.recordAt(it))
	return e, true
}

// Ascend calls fn for each entry whose key starts with prefix, in key order,
// until fn returns false.
func (v *View) Ascend(prefix []byte, fn func(Entry) bool) {
	c := v.Cursor(prefix)
	defer c.Close()
	for e, ok := c.Next(); ok; e, ok = c.Next() {
		if !fn(e) {
			return
		}
	}
}

// Cursor walks the entries under a prefix in key order, a few at a time, so
// a long scan can be spread over many calls (the snapshot streamer's use).
type Cursor struct {
	it      iter
	prefix  []byte
	started bool
	done    bool
}

// Cursor returns a cursor over the entries whose key starts with prefix.
// The cursor reads the view's slabs, so it delivers exactly the view
// whatever the map does meanwhile.
func (v *View) Cursor(prefix []byte) *Cursor {
	return &Cursor{it: iter{t: &v.t}, prefix: bytes.Clone(prefix)}
}

// Next returns the next entry under the prefix, or false when there is none.
func (c *Cursor) Next() (Entry, bool) {
	if c.done {
		return Entry{}, false
	}
	if !c.started {
		c.started = true
		c.it.seek(c.prefix)
	}
	x, ok := c.it.next()
	if !ok {
		c.Close()
		return Entry{}, false
	}
	e, _ := decodeRecord(c.it.t.recordAt(x))
	if !bytes.HasPrefix(e.key, c.prefix) {
		c.Close()
		return Entry{}, false
	}
	return e, true
}

// Close releases the cursor. Next returns false afterwards.
func (c *Cursor) Close() {
	c.done = true
	c.it.stack = nil
}
