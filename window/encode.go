package window

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The window's encoding in an FSM snapshot (raftlog): the view's chunks as
// they are, so that a restarted node holds exactly the same sequences, in
// the same chunks. Sequences are implicit: the i-th update is Base+1+i.
//
//	uvarint(base) uvarint(seq) uvarint(chunks)
//	chunks × { varint(first unix nanos) uvarint(n) n × { uvarint(key) uvarint(uuid) uvarint(props) uvarint(body) } uvarint(len) data }

// maxDecodeBytes bounds one chunk's data when decoding.
const maxDecodeBytes = 1 << 32

// WriteTo writes the view out.
func (v *View) WriteTo(w io.Writer) (int64, error) {
	var total int64
	buf := make([]byte, 0, 64<<10)
	flush := func() error {
		n, err := w.Write(buf)
		total += int64(n)
		buf = buf[:0]
		return err
	}
	buf = binary.AppendUvarint(buf, uint64(v.base))
	buf = binary.AppendUvarint(buf, uint64(v.seq))
	buf = binary.AppendUvarint(buf, uint64(len(v.chunks)))
	for i := range v.chunks {
		data, idx := v.parts(i)
		buf = binary.AppendVarint(buf, v.chunks[i].first)
		buf = binary.AppendUvarint(buf, uint64(len(idx)))
		for j := range idx {
			e := &idx[j]
			buf = binary.AppendUvarint(buf, uint64(e.key))
			buf = binary.AppendUvarint(buf, uint64(e.uuid))
			buf = binary.AppendUvarint(buf, uint64(e.props))
			buf = binary.AppendUvarint(buf, uint64(e.bd))
			if len(buf) >= 60<<10 {
				if err := flush(); err != nil {
					return total, err
				}
			}
		}
		used := 0
		if n := len(idx); n > 0 {
			used = int(idx[n-1].off) + idx[n-1].size()
		}
		buf = binary.AppendUvarint(buf, uint64(used))
		if err := flush(); err != nil {
			return total, err
		}
		n, err := w.Write(data[:used])
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, flush()
}

var errDecode = errors.New("window: bad encoding")

// Read decodes a window written by View.WriteTo, unbounded (see SetLimit).
// Its last chunk is the tail: appends go on filling it.
func Read(r *bufio.Reader) (*Window, error) {
	fail := func(what string, err error) (*Window, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: %s: %v", errDecode, what, err)
	}
	base, err := binary.ReadUvarint(r)
	if err != nil {
		return fail("base", err)
	}
	seq, err := binary.ReadUvarint(r)
	if err != nil {
		return fail("sequence", err)
	}
	count, err := binary.ReadUvarint(r)
	if err != nil {
		return fail("chunk count", err)
	}
	if seq < base || seq > 1<<62 {
		return fail("span", fmt.Errorf("base %d, sequence %d", base, seq))
	}
	w := New(0, int64(base))
	next := int64(base) + 1
	for i := uint64(0); i < count; i++ {
		where := func(what string) string { return fmt.Sprintf("chunk %d of %d: %s", i+1, count, what) }
		first, err := binary.ReadVarint(r)
		if err != nil {
			return fail(where("time"), err)
		}
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return fail(where("length"), err)
		}
		if n == 0 || n > seq-base {
			return fail(where("length"), fmt.Errorf("%d updates", n))
		}
		c := &chunk{first: first, idx: make([]entry, 0, n)}
		off := uint64(0)
		for j := uint64(0); j < n; j++ {
			var l [4]uint64
			for k := range l {
				if l[k], err = binary.ReadUvarint(r); err != nil {
					return fail(where("sizes"), err)
				}
			}
			size := l[0] + l[1] + l[2] + l[3]
			if l[0] == 0 || size > maxDecodeBytes || off+size > maxDecodeBytes {
				return fail(where("sizes"), fmt.Errorf("update %d: sizes %v", next, l))
			}
			c.idx = append(c.idx, entry{seq: next, off: uint32(off), key: uint32(l[0]), uuid: uint32(l[1]), props: uint32(l[2]), bd: uint32(l[3])})
			off += size
			next++
		}
		used, err := binary.ReadUvarint(r)
		if err != nil {
			return fail(where("data length"), err)
		}
		if used != off {
			return fail(where("data length"), fmt.Errorf("%d bytes, the sizes add up to %d", used, off))
		}
		c.data = make([]byte, used)
		if _, err := io.ReadFull(r, c.data); err != nil {
			return fail(where("data"), err)
		}
		w.chunks = append(w.chunks, c)
		w.bytes += c.bytes()
	}
	if next-1 != int64(seq) {
		return fail("span", fmt.Errorf("updates up to %d, want %d", next-1, seq))
	}
	w.seq = int64(seq)
	return w, nil
}
