// Package window keeps the resume window: the most recent committed updates,
// in sequence order, exactly as they were published, bounded in bytes
// (README "Protocol additions", resume). The store actor is its one writer:
// it appends every update it numbers, expiries and deletes included, so the
// window always holds the contiguous run of sequences (Base, Seq].
//
// Updates are laid out in chunks: one byte buffer for their frames and one
// pointer-free index. A chunk is append-only while it is the tail and never
// changes once sealed; the oldest chunks are dropped from the front when the
// window is over its byte bound. A View (O(1), no copy) sees the window as it
// was when it was taken, however the window goes on, and keeps the chunks it
// covers alive for as long as it is held.
package window

import (
	"bytes"
	"fmt"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

// EntryBytes is what the index costs per update, on top of its frames.
const EntryBytes = 32

// Chunk size bounds: a chunk is sealed once its frames reach the window's
// chunk size, Limit/64 clamped to these.
const (
	MinChunkBytes = 4 << 10
	MaxChunkBytes = 1 << 20
)

// entry locates one update's frames in its chunk's data:
// key, uuid, props, body, back to back from off.
type entry struct {
	seq                  int64
	off                  uint32
	key, uuid, props, bd uint32
}

func (e *entry) size() int { return int(e.key + e.uuid + e.props + e.bd) }

// chunk is a run of consecutive updates. The writer appends to data and idx
// only while the chunk is the tail; a View keeps the tail's slice headers of
// its own, and reads a sealed chunk's fields, which never change again.
type chunk struct {
	first int64 // unix nanoseconds of the first update's commit
	data  []byte
	idx   []entry
}

func (c *chunk) bytes() int64 { return int64(len(c.data)) + int64(len(c.idx))*EntryBytes }

// Window is the resume window. It is not safe for concurrent use: one
// goroutine (the store) appends and takes views; views may be read anywhere.
type Window struct {
	limit      int64 // byte bound; 0: none
	chunkBytes int
	base       int64 // every update with seq in (base, seq] is retained
	seq        int64
	chunks     []*chunk // oldest first; the last one is the tail (open)
	bytes      int64
}

// New returns an empty window bounded to limit bytes (0: unbounded) that
// starts after sequence base.
func New(limit, base int64) *Window {
	w := &Window{base: base, seq: base}
	w.setLimit(limit)
	return w
}

func (w *Window) setLimit(limit int64) {
	w.limit = max(limit, 0)
	w.chunkBytes = MaxChunkBytes
	if w.limit > 0 {
		w.chunkBytes = int(min(max(w.limit/64, MinChunkBytes), MaxChunkBytes))
	}
}

// SetLimit changes the byte bound (0: none), dropping the oldest chunks
// that no longer fit.
func (w *Window) SetLimit(limit int64) {
	w.setLimit(limit)
	w.trim()
}

// Base is the sequence the window starts after: it holds every update with
// Base < seq <= Seq.
func (w *Window) Base() int64 { return w.base }

// Seq is the last sequence appended (Base when empty).
func (w *Window) Seq() int64 { return w.seq }

// Bytes is what the window's updates take: their frames plus EntryBytes
// each.
func (w *Window) Bytes() int64 { return w.bytes }

// Oldest is when the oldest retained update was committed (zero: none).
func (w *Window) Oldest() time.Time {
	if len(w.chunks) == 0 {
		return time.Time{}
	}
	return time.Unix(0, w.chunks[0].first)
}

// Chunks is how many chunks the window holds.
func (w *Window) Chunks() int { return len(w.chunks) }

// Append adds the update numbered m.Seq, committed at, which must be
// Seq()+1: the window holds a run without gaps. The frames are copied.
func (w *Window) Append(m kvmsg.Msg, at time.Time) error {
	if m.Seq != w.seq+1 {
		return fmt.Errorf("window: update %d appended after %d", m.Seq, w.seq)
	}
	n := len(m.Key) + len(m.UUID) + len(m.Props) + len(m.Body)
	c := w.tail()
	if c == nil || len(c.data)+n > w.chunkBytes && len(c.idx) > 0 || len(c.data)+n > 1<<32-1 {
		c = &chunk{first: at.UnixNano(), data: make([]byte, 0, min(max(n, 1<<10), w.chunkBytes))}
		w.chunks = append(w.chunks, c)
	}
	if len(c.data)+n > cap(c.data) {
		// Grow by doubling up to the chunk size (never past it unless one
		// update is larger), so a sealed chunk wastes little. The old array
		// stays with the views that hold it.
		grown := make([]byte, len(c.data), max(min(2*cap(c.data), w.chunkBytes), len(c.data)+n))
		copy(grown, c.data)
		c.data = grown
	}
	e := entry{seq: m.Seq, off: uint32(len(c.data)), key: uint32(len(m.Key)), uuid: uint32(len(m.UUID)), props: uint32(len(m.Props)), bd: uint32(len(m.Body))}
	c.data = append(append(append(append(c.data, m.Key...), m.UUID...), m.Props...), m.Body...)
	c.idx = append(c.idx, e)
	w.seq = m.Seq
	w.bytes += int64(n) + EntryBytes
	w.trim()
	return nil
}

func (w *Window) tail() *chunk {
	if len(w.chunks) == 0 {
		return nil
	}
	return w.chunks[len(w.chunks)-1]
}

// trim drops the oldest chunks while the window is over its bound. The
// front slots are not cleared (a View may still read them): the array is
// copied once half of it is dropped slots, so that the window's own
// reference to dropped chunks goes too.
func (w *Window) trim() {
	if w.limit <= 0 {
		return
	}
	dropped := false
	for w.bytes > w.limit && len(w.chunks) > 0 {
		c := w.chunks[0]
		w.bytes -= c.bytes()
		w.base = c.idx[len(c.idx)-1].seq
		w.chunks = w.chunks[1:]
		dropped = true
	}
	if len(w.chunks) == 0 {
		w.base = w.seq
		w.chunks = nil
		return
	}
	if dropped && cap(w.chunks) > 2*len(w.chunks)+4 {
		w.chunks = append(make([]*chunk, 0, 2*len(w.chunks)), w.chunks...)
	}
}

// View returns the window as it is now, in O(1).
func (w *Window) View() *View {
	v := &View{base: w.base, seq: w.seq, chunks: w.chunks[:len(w.chunks):len(w.chunks)]}
	if t := w.tail(); t != nil {
		v.tailData, v.tailIdx = t.data, t.idx
	}
	return v
}

// View is the window as it was when taken: (Base, Seq]. It is immutable
// and safe to read from any goroutine.
type View struct {
	base, seq int64
	chunks    []*chunk
	tailData  []byte
	tailIdx   []entry
}

// Base is the sequence the view starts after.
func (v *View) Base() int64 { return v.base }

// Seq is the view's last sequence.
func (v *View) Seq() int64 { return v.seq }

// Len is how many updates the view holds.
func (v *View) Len() int64 { return v.seq - v.base }

// parts returns chunk i's data and index as the view sees them.
func (v *View) parts(i int) ([]byte, []entry) {
	if i == len(v.chunks)-1 {
		return v.tailData, v.tailIdx
	}
	return v.chunks[i].data, v.chunks[i].idx
}

// Covers reports whether the view holds every update after since: Base <=
// since <= Seq.
func (v *View) Covers(since int64) bool { return v.base <= since && since <= v.seq }

// Cursor returns a cursor over the view's updates with seq > since whose
// key starts with prefix, in sequence order. since must be covered.
func (v *View) Cursor(since int64, prefix []byte) *Cursor {
	c := &Cursor{v: v, prefix: prefix}
	// Find the chunk holding since+1: chunks are in order, each starts
	// after the last sequence of the one before.
	lo, hi := 0, len(v.chunks)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		_, idx := v.parts(mid)
		if idx[len(idx)-1].seq <= since {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	c.ci = lo
	if lo < len(v.chunks) {
		_, idx := v.parts(lo)
		c.ei = int(since + 1 - idx[0].seq)
		c.ei = max(c.ei, 0)
	}
	return c
}

// Record is one update in a view. Its slices alias the window's chunks:
// read them, never write.
type Record struct {
	Seq                    int64
	Key, UUID, Props, Body []byte
}

// Msg returns the record as a message (aliasing the window).
func (r Record) Msg() kvmsg.Msg {
	return kvmsg.Msg{Key: r.Key, Seq: r.Seq, UUID: r.UUID, Props: r.Props, Body: r.Body}
}

// Cursor walks a view's updates in sequence order.
type Cursor struct {
	v      *View
	prefix []byte
	ci, ei int
	// Scanned counts the updates looked at (matching or not).
	Scanned int64
}

// Next returns the next update whose key starts with the prefix.
func (c *Cursor) Next() (Record, bool) {
	for c.ci < len(c.v.chunks) {
		data, idx := c.v.parts(c.ci)
		for c.ei < len(idx) {
			e := &idx[c.ei]
			c.ei++
			c.Scanned++
			d := data[e.off : int(e.off)+e.size() : int(e.off)+e.size()]
			key := d[:e.key:e.key]
			if !bytes.HasPrefix(key, c.prefix) {
				continue
			}
			u := d[e.key : e.key+e.uuid : e.key+e.uuid]
			p := d[e.key+e.uuid : e.key+e.uuid+e.props : e.key+e.uuid+e.props]
			b := d[e.key+e.uuid+e.props:]
			return Record{Seq: e.seq, Key: key, UUID: u, Props: p, Body: b}, true
		}
		c.ci++
		c.ei = 0
	}
	return Record{}, false
}
