// Package raftlog is clonekv's durable, replicated history: a hashicorp/raft
// node (node.go, bootstrap.go) whose log entries (entry.go) carry batches of
// client updates and expiries, a finite state machine (fsm.go) that hands
// committed entries in order to the server's store actor, and the FSM
// snapshot format (snapshot.go) written from the store's copy-on-write view.
//
// The package decides nothing about keys or sequences: the store actor
// still numbers and applies every change. raftlog only makes sure the store
// sees exactly the committed entries, in log order, on every start.
package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/clonekv/clonekv/kvmsg"
)

// Kind is the type of a clonekv log entry (its first byte).
type Kind byte

const (
	// KindOps is a batch of changes proposed together: client updates and
	// expiries, in the order the store must apply them.
	KindOps Kind = 1
	// KindHistory names the history: the first entry the first leader of an
	// empty log proposes. Later ones are ignored.
	KindHistory Kind = 2
)

// OpKind is the type of one change.
type OpKind byte

const (
	OpSet    OpKind = 1 // a client update (a delete when the body is empty)
	OpExpire OpKind = 2 // delete Key if it still holds the update Seq
)

// Op is one change in an entry.
type Op struct {
	Kind OpKind
	// Msg is the update (OpSet: key, uuid, properties, body; Msg.Seq is not
	// encoded, the store numbers updates) or the key to expire (OpExpire).
	Msg kvmsg.Msg
	// TTLNanos is the ttl the client asked for and Expires the absolute
	// deadline (unix nanoseconds) the proposer computed from it; 0: none.
	TTLNanos int64
	Expires  int64
	// Seq is, for OpExpire, the sequence of the update that set the ttl.
	Seq int64
}

// Entry is one decoded log entry.
type Entry struct {
	Kind Kind
	// Proposal identifies the proposal on the leader that made it (its
	// local table of credits); 0 for none. Meaningless on other nodes and
	// after a restart, where no such proposal is waiting.
	Proposal uint64
	Ops      []Op   // KindOps
	History  string // KindHistory: 32 lowercase hex characters
}

// Size is an upper bound of the encoded size of op.
func (op *Op) Size() int {
	m := &op.Msg
	return 1 + 5*binary.MaxVarintLen64 + len(m.Key) + len(m.UUID) + len(m.Props) + len(m.Body)
}

// Every entry ends in a CRC-32C of the bytes before it: raft-wal checks
// only the tail of its log when it opens, so damage further back would
// otherwise reach the map as a wrong value.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendCRC(dst []byte, start int) []byte {
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// AppendOps encodes an ops entry onto dst.
func AppendOps(dst []byte, proposal uint64, ops []Op) []byte {
	start := len(dst)
	dst = append(dst, byte(KindOps))
	dst = binary.AppendUvarint(dst, proposal)
	dst = binary.AppendUvarint(dst, uint64(len(ops)))
	for i := range ops {
		op := &ops[i]
		dst = append(dst, byte(op.Kind))
		dst = appendBytes(dst, op.Msg.Key)
		switch op.Kind {
		case OpSet:
			dst = appendBytes(dst, op.Msg.UUID)
			dst = appendBytes(dst, op.Msg.Props)
			dst = appendBytes(dst, op.Msg.Body)
			dst = binary.AppendVarint(dst, op.TTLNanos)
			dst = binary.AppendVarint(dst, op.Expires)
		case OpExpire:
			dst = binary.AppendVarint(dst, op.Seq)
		}
	}
	return appendCRC(dst, start)
}

// EncodeHistory encodes a history entry.
func EncodeHistory(id string) []byte {
	return appendCRC(appendBytes([]byte{byte(KindHistory)}, []byte(id)), 0)
}

// ErrEntry marks an entry that does not decode: a bug or a damaged log,
// never something a client can cause (the collector validated everything).
var ErrEntry = errors.New("bad clonekv log entry")

// Decode decodes one entry. The ops' byte slices alias data.
func Decode(data []byte) (Entry, error) {
	if len(data) < 5 {
		return Entry{}, fmt.Errorf("%w: %d bytes", ErrEntry, len(data))
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return Entry{}, fmt.Errorf("%w: checksum mismatch", ErrEntry)
	}
	data = body
	d := decoder{buf: data}
	var e Entry
	e.Kind = Kind(d.byte())
	switch e.Kind {
	case KindHistory:
		e.History = string(d.bytes())
		if len(e.History) != 32 {
			d.fail("history id of %d characters, want 32", len(e.History))
		}
	case KindOps:
		e.Proposal = d.uvarint()
		n := d.uvarint()
		if n > uint64(len(data)) { // each op takes at least one byte
			d.fail("%d ops in %d bytes", n, len(data))
			break
		}
		e.Ops = make([]Op, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			op := Op{Kind: OpKind(d.byte())}
			op.Msg.Key = d.bytes()
			switch op.Kind {
			case OpSet:
				op.Msg.UUID = d.bytes()
				op.Msg.Props = d.bytes()
				op.Msg.Body = d.bytes()
				op.TTLNanos = d.varint()
				op.Expires = d.varint()
			case OpExpire:
				op.Seq = d.varint()
			default:
				d.fail("op kind %d", op.Kind)
			}
			e.Ops = append(e.Ops, op)
		}
	default:
		d.fail("entry kind %d", e.Kind)
	}
	if d.err == nil && len(d.buf) != 0 {
		d.fail("%d bytes after the entry", len(d.buf))
	}
	return e, d.err
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decoder reads from buf; the first error sticks and later reads return
// zero values.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrEntry, fmt.Sprintf(format, args...))
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail("truncated")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("truncated varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("truncated varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.buf)) {
		d.fail("field of %d bytes, %d left", n, len(d.buf))
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	if n == 0 {
		return nil
	}
	return b
}
