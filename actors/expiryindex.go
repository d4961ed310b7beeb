package actors

import (
	"bytes"
	"hash/maphash"

	"github.com/clonekv/clonekv/kvmap"
)

// expiryIndex holds the keys that have a ttl: a min-heap by absolute expiry
// plus a hash table from key to entry, so an overwrite or delete moves or
// removes the key's entry in O(log n) and a tick looks at the heap's top.
//
// It holds no pointers per key, so the GC neither scans nor allocates per
// key: the keys sit back to back in one byte slice, the entries and the
// heap are slices of plain structs, and the table is open addressing
// (linear probing, deletion by backward shift) over entry ids. About 60
// bytes per key plus the key itself, against about 110 with a Go map of
// *item (measured: README "Reliability").
type expiryIndex struct {
	keys    []byte // arena: every live key, and the garbage of removed ones
	garbage int    // bytes of keys that are no longer used
	ents    []expiryEnt
	free    []int32 // ids of removed entries, for reuse
	heap    []expiryNode
	table   []int32 // id+1 of the entry whose key hashes there (0: empty); len a power of 2
	n       int
	seed    maphash.Seed
	seeded  bool
}

// expiryEnt is one key with a ttl (pos -1: a free id).
type expiryEnt struct {
	off  int64  // the key's offset in keys
	seq  int64  // the update that set the ttl
	klen uint32 // the key's length
	pos  int32  // its place in the heap
}

// expiryNode is a heap slot: the expiry (unix nanoseconds) and the entry.
type expiryNode struct {
	at int64
	id int32
}

func (x *expiryIndex) Len() int { return x.n }

func (x *expiryIndex) key(id int32) []byte {
	e := &x.ents[id]
	return x.keys[e.off : e.off+int64(e.klen)]
}

func (x *expiryIndex) hash(key []byte) uint64 {
	if !x.seeded {
		x.seed, x.seeded = maphash.MakeSeed(), true
	}
	return maphash.Bytes(x.seed, key)
}

// find returns the table slot of key and its entry id, or the empty slot
// where it would go and -1.
func (x *expiryIndex) find(key []byte) (slot int, id int32) {
	if len(x.table) == 0 {
		return -1, -1
	}
	mask := len(x.table) - 1
	for i := int(x.hash(key)) & mask; ; i = (i + 1) & mask {
		v := x.table[i]
		if v == 0 {
			return i, -1
		}
		if bytes.Equal(x.key(v-1), key) {
			return i, v - 1
		}
	}
}

func (x *expiryIndex) has(key string) bool {
	_, id := x.find([]byte(key))
	return id >= 0
}

// track updates the index for one committed update: a new ttl adds or
// moves the key; anything else that touches a tracked key removes it.
func (x *expiryIndex) track(u *Update) {
	if u.ExpiresAt.IsZero() {
		x.removeKey(u.Msg.Key)
		return
	}
	x.pushBytes(u.Msg.Key, u.Msg.Seq, u.ExpiresAt.UnixNano())
}

// push adds key, or moves it when it is indexed already.
func (x *expiryIndex) push(key string, seq, at int64) { x.pushBytes([]byte(key), seq, at) }

func (x *expiryIndex) pushBytes(key []byte, seq, at int64) {
	if (x.n+1)*4 > len(x.table)*3 {
		x.grow()
	}
	slot, id := x.find(key)
	if id >= 0 {
		x.ents[id].seq = seq
		p := int(x.ents[id].pos)
		x.heap[p].at = at
		x.fix(p)
		return
	}
	if len(x.free) > 0 {
		id = x.free[len(x.free)-1]
		x.free = x.free[:len(x.free)-1]
	} else {
		id = int32(len(x.ents))
		x.ents = append(x.ents, expiryEnt{})
	}
	x.ents[id] = expiryEnt{off: int64(len(x.keys)), seq: seq, klen: uint32(len(key)), pos: int32(len(x.heap))}
	x.keys = append(x.keys, key...)
	x.table[slot] = id + 1
	x.n++
	x.heap = append(x.heap, expiryNode{at: at, id: id})
	x.up(len(x.heap) - 1)
}

func (x *expiryIndex) removeKey(key []byte) {
	if slot, id := x.find(key); id >= 0 {
		x.removeAt(slot, id)
	}
}

// removeAt removes entry id, found at table slot.
func (x *expiryIndex) removeAt(slot int, id int32) {
	// The table: shift back the entries after slot that may not sit past
	// the hole.
	mask := len(x.table) - 1
	hole := slot
	for j := (slot + 1) & mask; x.table[j] != 0; j = (j + 1) & mask {
		home := int(x.hash(x.key(x.table[j]-1))) & mask
		// Leave it when its home is cyclically in (hole, j].
		if (hole < j && hole < home && home <= j) || (hole > j && (home > hole || home <= j)) {
			continue
		}
		x.table[hole] = x.table[j]
		hole = j
	}
	x.table[hole] = 0
	// The heap.
	p := int(x.ents[id].pos)
	last := len(x.heap) - 1
	if p != last {
		x.swap(p, last)
	}
	x.heap = x.heap[:last]
	if p != last {
		x.fix(p)
	}
	// The entry and its key.
	x.garbage += int(x.ents[id].klen)
	x.ents[id] = expiryEnt{pos: -1}
	x.free = append(x.free, id)
	x.n--
	if x.garbage > 1<<16 && x.garbage > len(x.keys)/2 {
		x.compact()
	}
}

// compact copies the live keys into a fresh arena.
func (x *expiryIndex) compact() {
	keys := make([]byte, 0, len(x.keys)-x.garbage)
	for i := range x.ents {
		e := &x.ents[i]
		if e.pos < 0 {
			continue
		}
		off := int64(len(keys))
		keys = append(keys, x.keys[e.off:e.off+int64(e.klen)]...)
		e.off = off
	}
	x.keys, x.garbage = keys, 0
}

// grow doubles the table (at least 64 slots) and reinserts every entry.
func (x *expiryIndex) grow() {
	size := max(64, 2*len(x.table))
	x.table = make([]int32, size)
	mask := size - 1
	for _, nd := range x.heap {
		i := int(x.hash(x.key(nd.id))) & mask
		for x.table[i] != 0 {
			i = (i + 1) & mask
		}
		x.table[i] = nd.id + 1
	}
}

func (x *expiryIndex) swap(i, j int) {
	x.heap[i], x.heap[j] = x.heap[j], x.heap[i]
	x.ents[x.heap[i].id].pos = int32(i)
	x.ents[x.heap[j].id].pos = int32(j)
}

func (x *expiryIndex) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if x.heap[p].at <= x.heap[i].at {
			return
		}
		x.swap(i, p)
		i = p
	}
}

func (x *expiryIndex) down(i int) {
	n := len(x.heap)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if r := c + 1; r < n && x.heap[r].at < x.heap[c].at {
			c = r
		}
		if x.heap[i].at <= x.heap[c].at {
			return
		}
		x.swap(i, c)
		i = c
	}
}

func (x *expiryIndex) fix(i int) {
	x.down(i)
	x.up(i)
}

// due reports whether a key's expiry is at or before now (unix nanoseconds).
func (x *expiryIndex) due(now int64) bool { return len(x.heap) > 0 && x.heap[0].at <= now }

// popDue removes the keys whose expiry is at or before now, earliest
// first, at most max of them, and hands each to fn.
func (x *expiryIndex) popDue(now int64, max int, fn func(key string, seq, at int64)) {
	for n := 0; n < max && x.due(now); n++ {
		nd := x.heap[0]
		key := x.key(nd.id)
		seq := x.ents[nd.id].seq
		slot, _ := x.find(key)
		ks := string(key)
		x.removeAt(slot, nd.id)
		fn(ks, seq, nd.at)
	}
}

// countDue returns how many keys are due at now, in O(due): the heap is
// walked only below entries that are due.
func (x *expiryIndex) countDue(now int64) int {
	n, stack := 0, []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(x.heap) || x.heap[i].at > now {
			continue
		}
		n++
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return n
}

// rebuild replaces the index with the keys of v that have an expiry (after
// a snapshot restore).
func (x *expiryIndex) rebuild(v *kvmap.View) {
	*x = expiryIndex{seed: x.seed, seeded: x.seeded}
	v.Ascend(nil, func(e kvmap.Entry) bool {
		if at := e.Expires(); at != 0 {
			x.pushBytes(e.Key(), e.Seq(), at)
		}
		return true
	})
}
