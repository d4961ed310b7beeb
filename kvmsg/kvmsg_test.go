package kvmsg_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/clonekv/clonekv/kvmsg"
)

// be8 is the 8-byte big-endian two's-complement encoding of n, written out
// by hand so that the tests do not depend on the code under test.
func be8(n int64) []byte {
	u := uint64(n)
	return []byte{
		byte(u >> 56), byte(u >> 48), byte(u >> 40), byte(u >> 32),
		byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u),
	}
}

// fr builds the five frames of a message.
func fr(key string, seq int64, uuid, props, body string) [][]byte {
	return [][]byte{[]byte(key), be8(seq), []byte(uuid), []byte(props), []byte(body)}
}

// withFrame returns a copy of frames with frame i replaced.
func withFrame(frames [][]byte, i int, b []byte) [][]byte {
	out := append([][]byte(nil), frames...)
	out[i] = b
	return out
}

var uuid16 = "\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10"

func msgEqual(a, b kvmsg.Msg) bool {
	return bytes.Equal(a.Key, b.Key) && a.Seq == b.Seq && bytes.Equal(a.UUID, b.UUID) &&
		bytes.Equal(a.Props, b.Props) && bytes.Equal(a.Body, b.Body)
}

func fmtMsg(m kvmsg.Msg) string {
	return fmt.Sprintf("{Key:%q Seq:%d UUID:%x Props:%q Body:%.40q(len %d)}", m.Key, m.Seq, m.UUID, m.Props, m.Body, len(m.Body))
}

func TestDecodeValid(t *testing.T) {
	good := fr("/a/b", 42, uuid16, "ttl=30\n", "value")
	bigKey := strings.Repeat("k", 10000)
	bigBody := strings.Repeat("b", 2<<20)
	tests := []struct {
		name   string
		frames [][]byte
		lim    kvmsg.Limits
		want   kvmsg.Msg
		delete bool
	}{
		{
			name:   "empty uuid, no props",
			frames: fr("key", 1, "", "", "v"),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("key"), Seq: 1, Body: []byte("v")},
		},
		{
			name:   "16-byte uuid, one prop",
			frames: good,
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("/a/b"), Seq: 42, UUID: []byte(uuid16), Props: []byte("ttl=30\n"), Body: []byte("value")},
		},
		{
			name:   "multiple props, '=' and tab and UTF-8 in values",
			frames: fr("k", 7, uuid16, "ttl=0\nowner=al=ice\nnote=a\tb\nname=héllo ✓\nempty=\n", "x"),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("k"), Seq: 7, UUID: []byte(uuid16), Props: []byte("ttl=0\nowner=al=ice\nnote=a\tb\nname=héllo ✓\nempty=\n"), Body: []byte("x")},
		},
		{
			name:   "Go port's KTHXBAI: properties a single newline",
			frames: fr("KTHXBAI", 12, "", "\n", "/sub/"),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("KTHXBAI"), Seq: 12, Props: []byte("\n"), Body: []byte("/sub/")},
		},
		{
			name:   "Go port's KVSYNC: absolute ttl and a trailing empty line",
			frames: fr("/a", 3, "", "ttl=1700000030\n\n", "v"),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("/a"), Seq: 3, Props: []byte("ttl=1700000030\n\n"), Body: []byte("v")},
		},
		{
			name:   "empty body is a delete",
			frames: fr("gone", 9, uuid16, "", ""),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("gone"), Seq: 9, UUID: []byte(uuid16)},
			delete: true,
		},
		{
			name:   "heartbeat",
			frames: fr(kvmsg.KeyHeartbeat, 0, "", "", ""),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("HUGZ")},
			delete: true,
		},
		{
			name:   "snapshot end with subtree body",
			frames: fr(kvmsg.KeySnapshotEnd, 1234, "", "", "/sub/"),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("KTHXBAI"), Seq: 1234, Body: []byte("/sub/")},
		},
		{
			name:   "all empty",
			frames: [][]byte{nil, be8(0), nil, nil, nil},
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{},
			delete: true,
		},
		{
			name:   "binary key and body",
			frames: fr("\x00\xff\n", -5, "", "", "\x00\x01\xff"),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("\x00\xff\n"), Seq: -5, Body: []byte("\x00\x01\xff")},
		},
		{
			name:   "key exactly MaxKey",
			frames: fr(strings.Repeat("k", kvmsg.DefaultMaxKey), 1, "", "", "v"),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte(strings.Repeat("k", 255)), Seq: 1, Body: []byte("v")},
		},
		{
			name:   "body exactly MaxBody",
			frames: fr("k", 1, "", "", strings.Repeat("b", kvmsg.DefaultMaxBody)),
			lim:    kvmsg.DefaultLimits,
			want:   kvmsg.Msg{Key: []byte("k"), Seq: 1, Body: []byte(strings.Repeat("b", 1<<20))},
		},
		{
			name:   "zero limits: no key limit",
			frames: fr(bigKey, 1, "", "", "v"),
			lim:    kvmsg.Limits{},
			want:   kvmsg.Msg{Key: []byte(bigKey), Seq: 1, Body: []byte("v")},
		},
		{
			name:   "zero limits: no body limit",
			frames: fr("k", 1, "", "", bigBody),
			lim:    kvmsg.Limits{},
			want:   kvmsg.Msg{Key: []byte("k"), Seq: 1, Body: []byte(bigBody)},
		},
		{
			name:   "zero MaxKey, MaxBody set",
			frames: fr(bigKey, 1, "", "", "abc"),
			lim:    kvmsg.Limits{MaxBody: 3},
			want:   kvmsg.Msg{Key: []byte(bigKey), Seq: 1, Body: []byte("abc")},
		},
		{
			name:   "zero MaxBody, MaxKey set",
			frames: fr("abc", 1, "", "", bigBody),
			lim:    kvmsg.Limits{MaxKey: 3},
			want:   kvmsg.Msg{Key: []byte("abc"), Seq: 1, Body: []byte(bigBody)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := kvmsg.Decode(tt.frames, tt.lim)
			if err != nil {
				t.Fatalf("Decode: unexpected error %v", err)
			}
			if !msgEqual(m, tt.want) {
				t.Errorf("Decode = %s\nwant     %s", fmtMsg(m), fmtMsg(tt.want))
			}
			if got := m.IsDelete(); got != tt.delete {
				t.Errorf("IsDelete() = %v, want %v", got, tt.delete)
			}
		})
	}
}

func TestDecodeAliasesFrames(t *testing.T) {
	frames := fr("key", 1, uuid16, "a=1\n", "body")
	m, err := kvmsg.Decode(frames, kvmsg.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if &m.Key[0] != &frames[kvmsg.FrameKey][0] || &m.UUID[0] != &frames[kvmsg.FrameUUID][0] ||
		&m.Props[0] != &frames[kvmsg.FrameProps][0] || &m.Body[0] != &frames[kvmsg.FrameBody][0] {
		t.Error("Decode copied a frame; it is documented to alias them")
	}
}

func TestDecodeRejects(t *testing.T) {
	good := fr("key", 1, uuid16, "ttl=30\n", "value")
	tests := []struct {
		name   string
		frames [][]byte
		lim    kvmsg.Limits
		reason kvmsg.Reason
	}{
		{"0 frames (nil)", nil, kvmsg.DefaultLimits, kvmsg.ReasonFrameCount},
		{"1 frame", good[:1], kvmsg.DefaultLimits, kvmsg.ReasonFrameCount},
		{"4 frames", good[:4], kvmsg.DefaultLimits, kvmsg.ReasonFrameCount},
		{"6 frames", append(append([][]byte(nil), good...), []byte("x")), kvmsg.DefaultLimits, kvmsg.ReasonFrameCount},
		{"7 frames", append(append([][]byte(nil), good...), nil, nil), kvmsg.DefaultLimits, kvmsg.ReasonFrameCount},
		{"6 frames, zero limits", append(append([][]byte(nil), good...), nil), kvmsg.Limits{}, kvmsg.ReasonFrameCount},
		{"2 frames ICANHAZ?", [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/sub/")}, kvmsg.DefaultLimits, kvmsg.ReasonFrameCount},

		{"seq 0 bytes", withFrame(good, kvmsg.FrameSeq, nil), kvmsg.DefaultLimits, kvmsg.ReasonSeqLength},
		{"seq 3 bytes", withFrame(good, kvmsg.FrameSeq, []byte{0, 0, 1}), kvmsg.DefaultLimits, kvmsg.ReasonSeqLength},
		{"seq 7 bytes", withFrame(good, kvmsg.FrameSeq, make([]byte, 7)), kvmsg.DefaultLimits, kvmsg.ReasonSeqLength},
		{"seq 9 bytes", withFrame(good, kvmsg.FrameSeq, make([]byte, 9)), kvmsg.DefaultLimits, kvmsg.ReasonSeqLength},
		{"seq 4 bytes, zero limits", withFrame(good, kvmsg.FrameSeq, make([]byte, 4)), kvmsg.Limits{}, kvmsg.ReasonSeqLength},

		{"uuid 5 bytes", withFrame(good, kvmsg.FrameUUID, []byte("12345")), kvmsg.DefaultLimits, kvmsg.ReasonUUIDLength},
		{"uuid 15 bytes", withFrame(good, kvmsg.FrameUUID, make([]byte, 15)), kvmsg.DefaultLimits, kvmsg.ReasonUUIDLength},
		{"uuid 17 bytes", withFrame(good, kvmsg.FrameUUID, make([]byte, 17)), kvmsg.DefaultLimits, kvmsg.ReasonUUIDLength},
		{"uuid 36-byte text form", withFrame(good, kvmsg.FrameUUID, []byte("01234567-89ab-cdef-fedc-ba9876543210")), kvmsg.DefaultLimits, kvmsg.ReasonUUIDLength},

		{"props without trailing newline", withFrame(good, kvmsg.FrameProps, []byte("ttl=30")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props second line without newline", withFrame(good, kvmsg.FrameProps, []byte("a=1\nb=2")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props without '='", withFrame(good, kvmsg.FrameProps, []byte("ttl30\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props two empty lines", withFrame(good, kvmsg.FrameProps, []byte("\n\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props leading empty line", withFrame(good, kvmsg.FrameProps, []byte("\nttl=30\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props over MaxProps", withFrame(good, kvmsg.FrameProps, []byte("ttl=30\n")), kvmsg.Limits{MaxProps: 6}, kvmsg.ReasonPropsTooLong},
		{"props empty name", withFrame(good, kvmsg.FrameProps, []byte("=30\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props empty name after valid", withFrame(good, kvmsg.FrameProps, []byte("a=1\n=2\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props NUL in value", withFrame(good, kvmsg.FrameProps, []byte("a=\x00\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props NUL in name", withFrame(good, kvmsg.FrameProps, []byte("a\x00=1\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props 0x01 in name", withFrame(good, kvmsg.FrameProps, []byte("\x01a=1\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props 0x01 in value", withFrame(good, kvmsg.FrameProps, []byte("a=1\x01\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props DEL", withFrame(good, kvmsg.FrameProps, []byte("a=\x7f\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props CR LF", withFrame(good, kvmsg.FrameProps, []byte("a=1\r\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props invalid UTF-8", withFrame(good, kvmsg.FrameProps, []byte("a=\xc3\x28\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props lone 0xff", withFrame(good, kvmsg.FrameProps, []byte("a=\xff\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props truncated UTF-8 in name", withFrame(good, kvmsg.FrameProps, []byte("\xe2\x9c=1\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props binary in later line", withFrame(good, kvmsg.FrameProps, []byte("a=1\nb=\x00\n")), kvmsg.DefaultLimits, kvmsg.ReasonProps},
		{"props bad, zero limits", withFrame(good, kvmsg.FrameProps, []byte("x")), kvmsg.Limits{}, kvmsg.ReasonProps},

		{"key over default MaxKey", withFrame(good, kvmsg.FrameKey, bytes.Repeat([]byte("k"), kvmsg.DefaultMaxKey+1)), kvmsg.DefaultLimits, kvmsg.ReasonKeyTooLong},
		{"key over small MaxKey", withFrame(good, kvmsg.FrameKey, []byte("abcd")), kvmsg.Limits{MaxKey: 3}, kvmsg.ReasonKeyTooLong},
		{"body over default MaxBody", withFrame(good, kvmsg.FrameBody, bytes.Repeat([]byte("b"), kvmsg.DefaultMaxBody+1)), kvmsg.DefaultLimits, kvmsg.ReasonBodyTooLong},
		{"body over small MaxBody", withFrame(good, kvmsg.FrameBody, []byte("abc")), kvmsg.Limits{MaxBody: 2}, kvmsg.ReasonBodyTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := kvmsg.Decode(tt.frames, tt.lim)
			if err == nil {
				t.Fatalf("Decode accepted a malformed message: %s", fmtMsg(m))
			}
			var de *kvmsg.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
			}
			if de.Reason != tt.reason {
				t.Errorf("Reason = %q, want %q (error: %v)", de.Reason, tt.reason, err)
			}
			if msg := err.Error(); !strings.Contains(msg, string(tt.reason)) || de.Detail == "" {
				t.Errorf("error text %q should name the reason %q and carry a detail", msg, tt.reason)
			}
			// Wrapped errors still unwrap to the typed error.
			var de2 *kvmsg.DecodeError
			if !errors.As(fmt.Errorf("recv: %w", err), &de2) || de2.Reason != tt.reason {
				t.Errorf("wrapped error does not unwrap to a *DecodeError with reason %q", tt.reason)
			}
		})
	}
}

func TestSequenceEncoding(t *testing.T) {
	tests := []struct {
		seq  int64
		wire []byte
	}{
		{0, []byte{0, 0, 0, 0, 0, 0, 0, 0}},
		{1, []byte{0, 0, 0, 0, 0, 0, 0, 1}},
		{256, []byte{0, 0, 0, 0, 0, 0, 1, 0}},
		{0x0102030405060708, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{-1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{-2, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}},
		{-256, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}},
		{math.MaxInt64, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{math.MinInt64, []byte{0x80, 0, 0, 0, 0, 0, 0, 0}},
		{math.MaxInt32 + 1, []byte{0, 0, 0, 0, 0x80, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.seq), func(t *testing.T) {
			if got := kvmsg.EncodeSeq(tt.seq); !bytes.Equal(got, tt.wire) {
				t.Errorf("EncodeSeq(%d) = % x, want % x", tt.seq, got, tt.wire)
			}
			f := kvmsg.Msg{Key: []byte("k"), Seq: tt.seq, Body: []byte("v")}.Frames()
			if !bytes.Equal(f[kvmsg.FrameSeq], tt.wire) {
				t.Errorf("Frames()[seq] = % x, want % x", f[kvmsg.FrameSeq], tt.wire)
			}
			m, err := kvmsg.Decode([][]byte{[]byte("k"), tt.wire, nil, nil, []byte("v")}, kvmsg.DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if m.Seq != tt.seq {
				t.Errorf("Decode seq % x = %d, want %d", tt.wire, m.Seq, tt.seq)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := []kvmsg.Msg{
		{},
		{Key: []byte("k"), Seq: 1, Body: []byte("v")},
		{Key: []byte("/a/b"), Seq: math.MaxInt64, UUID: []byte(uuid16), Props: []byte("ttl=30\nx=y\n"), Body: []byte("value")},
		{Key: []byte("neg"), Seq: -1, UUID: []byte(uuid16), Props: []byte("a=1\n")},
		{Key: []byte("min"), Seq: math.MinInt64, Body: []byte{0, 1, 2, 0xff}},
		{Key: []byte(kvmsg.KeyHeartbeat)},
		{Key: []byte(kvmsg.KeySnapshotEnd), Seq: 99, Body: []byte("/sub/")},
	}
	for i, m := range msgs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			f := m.Frames()
			if len(f) != kvmsg.NumFrames {
				t.Fatalf("Frames() gave %d frames, want %d", len(f), kvmsg.NumFrames)
			}
			want := [][]byte{m.Key, be8(m.Seq), m.UUID, m.Props, m.Body}
			for j := range want {
				if !bytes.Equal(f[j], want[j]) {
					t.Errorf("frame %d = %q, want %q", j, f[j], want[j])
				}
			}
			got, err := kvmsg.Decode(f, kvmsg.DefaultLimits)
			if err != nil {
				t.Fatalf("Decode(Frames()): %v", err)
			}
			if !msgEqual(got, m) {
				t.Errorf("round trip = %s\nwant         %s", fmtMsg(got), fmtMsg(m))
			}
			if got.IsDelete() != (len(m.Body) == 0) {
				t.Errorf("IsDelete() = %v for body %q", got.IsDelete(), m.Body)
			}
		})
	}
}

func TestFramesAllocatesSeqEachCall(t *testing.T) {
	f1 := kvmsg.Msg{Key: []byte("a"), Seq: 1}.Frames()
	f2 := kvmsg.Msg{Key: []byte("b"), Seq: 2}.Frames()
	if !bytes.Equal(f1[kvmsg.FrameSeq], be8(1)) || !bytes.Equal(f2[kvmsg.FrameSeq], be8(2)) {
		t.Errorf("sequence frames share storage: % x, % x", f1[kvmsg.FrameSeq], f2[kvmsg.FrameSeq])
	}
}

func TestAppendFramesSharedSeqBuffer(t *testing.T) {
	msgs := []kvmsg.Msg{
		{Key: []byte("a"), Seq: 1, Body: []byte("1")},
		{Key: []byte("b"), Seq: -2, UUID: []byte(uuid16), Props: []byte("ttl=5\n"), Body: []byte("2")},
		{Key: []byte("c"), Seq: math.MaxInt64},
		{Key: []byte("d"), Seq: math.MinInt64, Body: []byte("4")},
	}
	prefix := []byte("ROUTER-identity")
	seqBuf := make([]byte, len(msgs)*kvmsg.SeqLen)
	dst := [][]byte{prefix}
	for i, m := range msgs {
		dst = m.AppendFrames(dst, seqBuf[i*kvmsg.SeqLen:])
	}
	if len(dst) != 1+len(msgs)*kvmsg.NumFrames {
		t.Fatalf("got %d frames, want %d", len(dst), 1+len(msgs)*kvmsg.NumFrames)
	}
	if !bytes.Equal(dst[0], prefix) {
		t.Errorf("existing frame clobbered: %q", dst[0])
	}
	for i, m := range msgs {
		group := dst[1+i*kvmsg.NumFrames : 1+(i+1)*kvmsg.NumFrames]
		seq := group[kvmsg.FrameSeq]
		if len(seq) != kvmsg.SeqLen || cap(seq) != kvmsg.SeqLen {
			t.Errorf("msg %d: seq frame len %d cap %d, want both %d (a wider cap lets an append clobber the next message)", i, len(seq), cap(seq), kvmsg.SeqLen)
		}
		if &seq[0] != &seqBuf[i*kvmsg.SeqLen] {
			t.Errorf("msg %d: seq frame does not use seqBuf[%d:]", i, i*kvmsg.SeqLen)
		}
		got, err := kvmsg.Decode(group, kvmsg.DefaultLimits)
		if err != nil {
			t.Fatalf("msg %d: %v", i, err)
		}
		if !msgEqual(got, m) {
			t.Errorf("msg %d = %s\nwant    %s", i, fmtMsg(got), fmtMsg(m))
		}
	}
	// Appending to one sequence frame must not write into the next one.
	_ = append(dst[1+kvmsg.FrameSeq], 0xaa, 0xbb)
	if !bytes.Equal(seqBuf[kvmsg.SeqLen:2*kvmsg.SeqLen], be8(-2)) {
		t.Errorf("append to msg 0's seq frame overwrote msg 1's: % x", seqBuf[kvmsg.SeqLen:2*kvmsg.SeqLen])
	}
	// The seq buffer may be longer than needed; bytes past SeqLen are untouched.
	buf := bytes.Repeat([]byte{0xee}, 12)
	f := kvmsg.Msg{Seq: 3}.AppendFrames(nil, buf)
	if !bytes.Equal(f[kvmsg.FrameSeq], be8(3)) || !bytes.Equal(buf[8:], []byte{0xee, 0xee, 0xee, 0xee}) {
		t.Errorf("AppendFrames with a 12-byte buffer: seq % x, buffer % x", f[kvmsg.FrameSeq], buf)
	}
}

func TestMsgPropAndSetProp(t *testing.T) {
	frames := fr("k", 1, "", "a=1\nttl=30\n", "v")
	m, err := kvmsg.Decode(frames, kvmsg.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Prop("ttl"); !ok || v != "30" {
		t.Errorf(`Prop("ttl") = %q, %v; want "30", true`, v, ok)
	}
	if v, ok := m.Prop("missing"); ok || v != "" {
		t.Errorf(`Prop("missing") = %q, %v; want "", false`, v, ok)
	}
	m2 := m.SetProp("ttl", "5").SetProp("b", "2")
	if want := "a=1\nttl=5\nb=2\n"; string(m2.Props) != want {
		t.Errorf("SetProp props = %q, want %q", m2.Props, want)
	}
	if string(m.Props) != "a=1\nttl=30\n" || string(frames[kvmsg.FrameProps]) != "a=1\nttl=30\n" {
		t.Errorf("SetProp modified the original message or its frames: %q / %q", m.Props, frames[kvmsg.FrameProps])
	}
	if string(m2.Key) != "k" || m2.Seq != 1 || string(m2.Body) != "v" {
		t.Errorf("SetProp changed other fields: %s", fmtMsg(m2))
	}
	if d, err := m2.TTL(); err != nil || d.Seconds() != 5 {
		t.Errorf("TTL after SetProp = %v, %v; want 5s", d, err)
	}
	if _, err := kvmsg.Decode(m2.Frames(), kvmsg.DefaultLimits); err != nil {
		t.Errorf("message after SetProp does not decode: %v", err)
	}
}
