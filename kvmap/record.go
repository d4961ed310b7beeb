package kvmap

import (
	"encoding/binary"
	"math"

	"github.com/clonekv/clonekv/kvmsg"
)

// A record is one stored message laid out as bytes in a slab:
//
//	uvarint(len key) key uvarint(seq) uvarint(expires)
//	uvarint(len uuid) uuid uvarint(len props) props uvarint(len body) body
//
// The key comes first so that comparing keys reads one varint and the key.
// Every record is at least five bytes long, so no two records of a slab
// start at the same offset.

// recordSize returns the encoded size of msg with the given expiry.
func recordSize(msg kvmsg.Msg, expires int64) int {
	return uvarintLen(uint64(len(msg.Key))) + len(msg.Key) +
		uvarintLen(uint64(msg.Seq)) + uvarintLen(uint64(expires)) +
		uvarintLen(uint64(len(msg.UUID))) + len(msg.UUID) +
		uvarintLen(uint64(len(msg.Props))) + len(msg.Props) +
		uvarintLen(uint64(len(msg.Body))) + len(msg.Body)
}

// appendRecord appends msg's record to dst.
func appendRecord(dst []byte, msg kvmsg.Msg, expires int64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(msg.Key)))
	dst = append(dst, msg.Key...)
	dst = binary.AppendUvarint(dst, uint64(msg.Seq))
	dst = binary.AppendUvarint(dst, uint64(expires))
	dst = binary.AppendUvarint(dst, uint64(len(msg.UUID)))
	dst = append(dst, msg.UUID...)
	dst = binary.AppendUvarint(dst, uint64(len(msg.Props)))
	dst = append(dst, msg.Props...)
	dst = binary.AppendUvarint(dst, uint64(len(msg.Body)))
	dst = append(dst, msg.Body...)
	return dst
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// uvarint decodes the varint at b[i:] and returns it and the offset after
// it. Records are written by appendRecord only, so a malformed varint is a
// bug: it panics rather than misread the slab.
func uvarint(b []byte, i int) (uint64, int) {
	if i < len(b) && b[i] < 0x80 { // the common case: one byte
		return uint64(b[i]), i + 1
	}
	x, n := binary.Uvarint(b[i:])
	if n <= 0 {
		panic("kvmap: corrupt record")
	}
	return x, i + n
}

// recordKey returns the key of the record starting at b[0].
func recordKey(b []byte) []byte {
	n, i := uvarint(b, 0)
	end := i + int(n)
	return b[i:end:end]
}

// field returns the length-prefixed field at b[i:] (capacity-limited, so
// appending to it never writes into the next field) and the offset after it.
func field(b []byte, i int) ([]byte, int) {
	n, i := uvarint(b, i)
	if n > math.MaxInt32 || i+int(n) > len(b) {
		panic("kvmap: corrupt record")
	}
	end := i + int(n)
	return b[i:end:end], end
}

// decodeRecord decodes the record at b[0] and returns it and its size.
func decodeRecord(b []byte) (Entry, int) {
	var e Entry
	var i int
	var x uint64
	e.key, i = field(b, 0)
	x, i = uvarint(b, i)
	e.seq = int64(x)
	x, i = uvarint(b, i)
	e.expires = int64(x)
	e.uuid, i = field(b, i)
	e.props, i = field(b, i)
	e.body, i = field(b, i)
	return e, i
}

// Entry is one stored message. Its byte slices alias immutable storage
// shared with the map and its views: never modify them. An Entry keeps the
// storage it points into alive, so it stays valid after the key is
// overwritten, deleted or moved by compaction.
type Entry struct {
	key, uuid, props, body []byte
	seq, expires           int64
}

// NewEntry packs m into a stored entry, copying its frames into one buffer.
func NewEntry(m kvmsg.Msg) Entry {
	b := appendRecord(make([]byte, 0, recordSize(m, 0)), m, 0)
	e, _ := decodeRecord(b)
	return e
}

// Key returns the entry's key.
func (e Entry) Key() []byte { return e.key }

// Seq returns the sequence number of the update that stored the entry.
func (e Entry) Seq() int64 { return e.seq }

// Expires returns the entry's absolute expiry in unix nanoseconds, or 0 when
// it does not expire. The server decides it once, when the update is
// proposed, so that every node and every restart expires the key at the
// same moment.
func (e Entry) Expires() int64 { return e.expires }

// UUID returns the entry's UUID frame (empty or 16 bytes).
func (e Entry) UUID() []byte { return e.uuid }

// Props returns the entry's raw properties frame.
func (e Entry) Props() []byte { return e.props }

// Body returns the entry's value.
func (e Entry) Body() []byte { return e.body }

// Msg returns the entry as a message (aliasing the entry's storage).
func (e Entry) Msg() kvmsg.Msg {
	return kvmsg.Msg{Key: e.key, Seq: e.seq, UUID: e.uuid, Props: e.props, Body: e.body}
}
