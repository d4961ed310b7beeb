package raftlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/window"
)

// The FSM snapshot format: a magic line, the sequence, the history id and
// the number of keys, then each key's stored message with its sequence and
// expiry, then the magic again as a trailer. raft's file snapshot store
// adds a CRC-64 of the whole file and checks it on open.
//
//	"clonekv-fsm-1\n" uvarint(seq) bytes(history) uvarint(count)
//	count × { bytes(key) bytes(uuid) bytes(props) bytes(body) varint(seq) varint(expires) }
//	"clonekv-fsm-1\n"
//
// bytes(x) is uvarint(len(x)) followed by x.
//
// Version 2 ("clonekv-fsm-2\n" as magic and trailer) adds the resume
// window after the keys, in window.View.WriteTo's encoding; it is written
// when the state has a window (resume on), version 1 otherwise. Both are
// read.
const (
	snapshotMagic   = "clonekv-fsm-1\n"
	snapshotMagicV2 = "clonekv-fsm-2\n"
)

// snapshot is a raft.FSMSnapshot holding the store's copy-on-write view.
type snapshot struct {
	state   State
	written func()
}

// Persist writes the view out (raft's snapshot goroutine).
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.state); err != nil {
		return errors.Join(fmt.Errorf("write fsm snapshot: %w", err), sink.Cancel())
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("write fsm snapshot: %w", err)
	}
	s.written()
	return nil
}

// Release drops the view.
func (s *snapshot) Release() { s.state.Map, s.state.Window = nil, nil }

// discarded is the FSM snapshot of the in-memory log: raft takes it only to
// compact its log, its store throws it away, and nothing ever restores it.
type discarded struct{}

func (discarded) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (discarded) Release()                             {}

func writeSnapshot(w io.Writer, st State) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	magic := snapshotMagic
	if st.Window != nil {
		magic = snapshotMagicV2
	}
	var buf []byte
	buf = append(buf, magic...)
	buf = binary.AppendUvarint(buf, uint64(st.Seq))
	buf = appendBytes(buf, []byte(st.History))
	buf = binary.AppendUvarint(buf, uint64(st.Map.Len()))
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	var err error
	st.Map.Ascend(nil, func(e kvmap.Entry) bool {
		buf = buf[:0]
		buf = appendBytes(buf, e.Key())
		buf = appendBytes(buf, e.UUID())
		buf = appendBytes(buf, e.Props())
		buf = appendBytes(buf, e.Body())
		buf = binary.AppendVarint(buf, e.Seq())
		buf = binary.AppendVarint(buf, e.Expires())
		_, err = bw.Write(buf)
		return err == nil
	})
	if err != nil {
		return err
	}
	if st.Window != nil {
		if _, err := st.Window.WriteTo(bw); err != nil {
			return err
		}
	}
	if _, err := bw.WriteString(magic); err != nil {
		return err
	}
	return bw.Flush()
}

// errSnapshot marks a snapshot that does not decode.
var errSnapshot = errors.New("bad clonekv fsm snapshot")

// ReadSnapshot decodes an FSM snapshot (a snapshot directory's state.bin):
// the state it holds. Tools and tests use it; raft's restore goes through
// the FSM.
func ReadSnapshot(r io.Reader) (Restored, error) { return readSnapshot(r) }

func readSnapshot(r io.Reader) (Restored, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var out Restored
	fail := func(what string, err error) (Restored, error) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Restored{}, fmt.Errorf("%w: %s: %v", errSnapshot, what, err)
	}
	magic, err := readMagic(br)
	if err != nil {
		return fail("header", err)
	}
	seq, err := binary.ReadUvarint(br)
	if err != nil {
		return fail("sequence", err)
	}
	hist, err := readField(br, nil)
	if err != nil {
		return fail("history", err)
	}
	count, err := binary.ReadUvarint(br)
	if err != nil {
		return fail("key count", err)
	}
	out.Seq, out.History, out.Map = int64(seq), string(hist), kvmap.New()
	// One scratch buffer for every entry's fields: ApplyExpiring copies
	// what it keeps.
	var scratch []byte
	for i := uint64(0); i < count; i++ {
		where := func(what string) string { return fmt.Sprintf("key %d of %d: %s", i+1, count, what) }
		scratch = scratch[:0]
		var offs [5]int
		for f := range 4 {
			if scratch, err = readField(br, scratch); err != nil {
				return fail(where("fields"), err)
			}
			offs[f+1] = len(scratch)
		}
		es, err := binary.ReadVarint(br)
		if err != nil {
			return fail(where("sequence"), err)
		}
		ex, err := binary.ReadVarint(br)
		if err != nil {
			return fail(where("expiry"), err)
		}
		field := func(f int) []byte { return scratch[offs[f]:offs[f+1]:offs[f+1]] }
		m := kvmsg.Msg{Key: field(0), Seq: es, UUID: field(1), Props: field(2), Body: field(3)}
		if len(m.Key) == 0 || len(m.Body) == 0 {
			return fail(where("entry"), errors.New("empty key or value"))
		}
		out.Map.Load(m, ex) // the snapshot is in key order
	}
	if magic == snapshotMagicV2 {
		if out.Window, err = window.Read(br); err != nil {
			return fail("resume window", err)
		}
		if out.Window.Seq() != out.Seq {
			return fail("resume window", fmt.Errorf("window ends at %d, the snapshot at %d", out.Window.Seq(), out.Seq))
		}
	}
	trailer, err := readMagic(br)
	if err != nil {
		return fail("trailer", err)
	}
	if trailer != magic {
		return fail("trailer", fmt.Errorf("trailer %q after header %q", trailer, magic))
	}
	return out, nil
}

// readMagic reads a version 1 or 2 magic line and returns it.
func readMagic(br *bufio.Reader) (string, error) {
	var m [len(snapshotMagic)]byte
	if _, err := io.ReadFull(br, m[:]); err != nil {
		return "", err
	}
	if string(m[:]) != snapshotMagic && string(m[:]) != snapshotMagicV2 {
		return "", fmt.Errorf("magic %q, want %q or %q", m[:], snapshotMagic, snapshotMagicV2)
	}
	return string(m[:]), nil
}

// readField appends one length-prefixed field (at most 1 GiB) to dst.
func readField(br *bufio.Reader, dst []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return dst, err
	}
	if n > 1<<30 {
		return dst, fmt.Errorf("field of %d bytes", n)
	}
	at := len(dst)
	dst = slices.Grow(dst, int(n))[:at+int(n)]
	if _, err := io.ReadFull(br, dst[at:]); err != nil {
		return dst, err
	}
	return dst, nil
}
