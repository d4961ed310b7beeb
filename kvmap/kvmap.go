// Package kvmap is the Clone key-value map: an ordered map from key to the
// last message stored under it, with O(1) copy-on-write views.
//
// One goroutine (the store actor on the server, the client's owner goroutine
// on a client) owns a Map and mutates it; View hands out an immutable
// snapshot in O(1) that any other goroutine may read while the owner keeps
// writing. Reading a subtree is a range scan over the keys with that prefix,
// not a scan of the whole map.
//
// Memory: an entry is stored by value in the B-tree's node arrays (40 bytes)
// and its key, UUID, properties and body share one allocation, so a 12-byte
// key with a 16-byte body and a 16-byte UUID costs about 124 bytes of live
// heap (48 for the buffer, the rest the entry in half- to fully-filled
// B-tree leaves).
package kvmap

import (
	"bytes"
	"unsafe"

	"github.com/tidwall/btree"

	"github.com/clonekv/clonekv/kvmsg"
)

// Entry is one stored message. Its byte slices alias one immutable buffer:
// never modify them.
//
// An entry is 40 bytes, stored by value in the B-tree's node arrays: a
// pointer to the start of its buffer (key | uuid | props | body) instead of
// a 24-byte slice header, and 32-bit sizes. Keys are capped at 65535 bytes
// (the server's limit is far lower) and bodies plus properties at 4 GiB.
type Entry struct {
	data     *byte // first byte of key | uuid | props | body; nil when all are empty
	seq      int64
	expires  int64  // absolute expiry, unix nanoseconds; 0 = none
	size     uint32 // total bytes at data
	propsLen uint32
	keyLen   uint16
	uuidLen  uint8
}

// NewEntry packs m into a stored entry, copying its frames into one buffer.
func NewEntry(m kvmsg.Msg) Entry {
	size := len(m.Key) + len(m.UUID) + len(m.Props) + len(m.Body)
	e := Entry{
		seq:      m.Seq,
		size:     uint32(size),
		keyLen:   uint16(len(m.Key)),
		uuidLen:  uint8(len(m.UUID)),
		propsLen: uint32(len(m.Props)),
	}
	if size > 0 {
		data := make([]byte, 0, size)
		data = append(data, m.Key...)
		data = append(data, m.UUID...)
		data = append(data, m.Props...)
		data = append(data, m.Body...)
		e.data = &data[0]
	}
	return e
}

// bytes returns the entry's whole buffer.
func (e Entry) bytes() []byte {
	if e.data == nil {
		return nil
	}
	return unsafe.Slice(e.data, e.size)
}

// Key returns the entry's key.
func (e Entry) Key() []byte { return e.bytes()[:e.keyLen:e.keyLen] }

// Seq returns the sequence number of the update that stored the entry.
func (e Entry) Seq() int64 { return e.seq }

// Expires returns the entry's absolute expiry in unix nanoseconds, or 0 when
// it does not expire. The server decides it once, when the update is
// proposed, so that every node and every restart expires the key at the
// same moment.
func (e Entry) Expires() int64 { return e.expires }

// UUID returns the entry's UUID frame (empty or 16 bytes).
func (e Entry) UUID() []byte {
	s, t := int(e.keyLen), int(e.keyLen)+int(e.uuidLen)
	return e.bytes()[s:t:t]
}

// Props returns the entry's raw properties frame.
func (e Entry) Props() []byte {
	s := int(e.keyLen) + int(e.uuidLen)
	t := s + int(e.propsLen)
	return e.bytes()[s:t:t]
}

// Body returns the entry's value.
func (e Entry) Body() []byte {
	s := int(e.keyLen) + int(e.uuidLen) + int(e.propsLen)
	b := e.bytes()
	return b[s:len(b):len(b)]
}

// Msg returns the entry as a message (aliasing the entry's buffer).
func (e Entry) Msg() kvmsg.Msg {
	return kvmsg.Msg{Key: e.Key(), Seq: e.seq, UUID: e.UUID(), Props: e.Props(), Body: e.Body()}
}

func less(a, b Entry) bool { return bytes.Compare(a.Key(), b.Key()) < 0 }

// probe returns an Entry usable as a search key.
func probe(key []byte) Entry {
	if len(key) == 0 {
		return Entry{}
	}
	return Entry{data: &key[0], size: uint32(len(key)), keyLen: uint16(len(key))}
}

// Map is the mutable map. It is not safe for concurrent use: one owner
// mutates it; others read Views.
type Map struct {
	tree *btree.BTreeG[Entry]
}

// New returns an empty map.
func New() *Map {
	return &Map{tree: btree.NewBTreeGOptions(less, btree.Options{NoLocks: true})}
}

// Apply stores m under its key, or deletes the key when m's body is empty
// (the Clone protocol's delete). It copies m's bytes; m may be reused.
func (m *Map) Apply(msg kvmsg.Msg) { m.ApplyExpiring(msg, 0) }

// ApplyExpiring is Apply for an update that expires at the absolute time
// expires (unix nanoseconds; 0 = never), kept with the entry.
func (m *Map) ApplyExpiring(msg kvmsg.Msg, expires int64) {
	if msg.IsDelete() {
		m.tree.Delete(probe(msg.Key))
		return
	}
	e := NewEntry(msg)
	e.expires = expires
	m.tree.Set(e)
}

// Load is ApplyExpiring for input in key order (a snapshot being read
// back): a key that sorts after every key in the map is appended without a
// search. Any other key is stored as ApplyExpiring would.
func (m *Map) Load(msg kvmsg.Msg, expires int64) {
	if msg.IsDelete() {
		m.tree.Delete(probe(msg.Key))
		return
	}
	e := NewEntry(msg)
	e.expires = expires
	m.tree.Load(e)
}

// Delete removes key and reports whether it was there.
func (m *Map) Delete(key []byte) bool {
	_, ok := m.tree.Delete(probe(key))
	return ok
}

// Get returns the entry stored under key.
func (m *Map) Get(key []byte) (Entry, bool) { return m.tree.Get(probe(key)) }

// Len returns the number of keys stored.
func (m *Map) Len() int { return m.tree.Len() }

// Clear removes every key.
func (m *Map) Clear() { m.tree.Clear() }

// View returns an immutable snapshot of the map in O(1). Later changes to m
// are not visible through it, and it may be read from any goroutine (one
// goroutine at a time per View) while m's owner keeps writing.
func (m *Map) View() *View { return &View{tree: m.tree.Copy()} }

// View is an immutable snapshot of a Map.
type View struct {
	tree *btree.BTreeG[Entry]
}

// Len returns the number of keys in the view.
func (v *View) Len() int { return v.tree.Len() }

// Get returns the entry stored under key in the view.
func (v *View) Get(key []byte) (Entry, bool) { return v.tree.Get(probe(key)) }

// Ascend calls fn for each entry whose key starts with prefix, in key order,
// until fn returns false.
func (v *View) Ascend(prefix []byte, fn func(Entry) bool) {
	v.tree.Ascend(probe(prefix), func(e Entry) bool {
		if !bytes.HasPrefix(e.Key(), prefix) {
			return false
		}
		return fn(e)
	})
}

// Cursor walks the entries under a prefix in key order, a few at a time, so
// a long scan can be spread over many calls (the snapshot streamer's use).
type Cursor struct {
	iter    btree.IterG[Entry]
	prefix  []byte
	started bool
	done    bool
}

// Cursor returns a cursor over the entries whose key starts with prefix.
func (v *View) Cursor(prefix []byte) *Cursor {
	return &Cursor{iter: v.tree.Iter(), prefix: prefix}
}

// Next returns the next entry under the prefix, or false when there is none.
func (c *Cursor) Next() (Entry, bool) {
	if c.done {
		return Entry{}, false
	}
	var ok bool
	if !c.started {
		c.started = true
		ok = c.iter.Seek(probe(c.prefix))
	} else {
		ok = c.iter.Next()
	}
	if !ok || !bytes.HasPrefix(c.iter.Item().Key(), c.prefix) {
		c.Close()
		return Entry{}, false
	}
	return c.iter.Item(), true
}

// Close releases the cursor. Next returns false afterwards.
func (c *Cursor) Close() {
	if !c.done {
		c.done = true
		c.iter.Release()
	}
}
