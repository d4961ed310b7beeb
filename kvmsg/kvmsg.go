// Package kvmsg is the Clone protocol's five-frame key-value message
// (ZeroMQ RFC 12/CHP as the Guide's Model Five speaks it):
//
//	frame 0  key
//	frame 1  sequence, 8 bytes, big-endian signed 64-bit
//	frame 2  UUID, 16 bytes or empty
//	frame 3  properties, zero or more "name=value\n" lines
//	frame 4  body; an empty body means delete
//
// What the Guide's own peers send is accepted as they send it: the Go port's
// kvmsg writes a properties frame of a single "\n" when there are none (and
// ends every frame with an empty line), the C and Python ones an empty frame;
// both are an empty property set here (see ValidateProps).
//
// The package holds no sockets: Decode turns received frames into a Msg
// (rejecting anything malformed with a *DecodeError) and Frames encodes one.
// Frames are kept as []byte end to end; Decode does not copy them, so a Msg
// aliases the frames it was decoded from and must be treated as immutable once
// handed on.
package kvmsg

import (
	"encoding/binary"
	"fmt"
)

// Frame positions and fixed sizes.
const (
	FrameKey   = 0
	FrameSeq   = 1
	FrameUUID  = 2
	FrameProps = 3
	FrameBody  = 4
	NumFrames  = 5

	SeqLen  = 8
	UUIDLen = 16
)

// Reserved keys of the protocol's control messages.
const (
	KeySnapshotEnd = "KTHXBAI"  // ends a snapshot; seq = the snapshot's sequence, body = subtree
	KeyHeartbeat   = "HUGZ"     // idle heartbeat on the publisher, seq 0
	CmdSnapshot    = "ICANHAZ?" // snapshot request command on the ROUTER port
)

// Default size limits, as the Guide's kvmsg caps keys at 255 bytes.
const (
	DefaultMaxKey   = 255
	DefaultMaxBody  = 1 << 20
	DefaultMaxProps = 64 << 10
)

// Msg is one Clone message. The zero value is a valid message with an empty
// key, sequence 0, no UUID, no properties and an empty body (a delete).
type Msg struct {
	Key   []byte
	Seq   int64
	UUID  []byte // empty or UUIDLen bytes
	Props []byte // raw "name=value\n" lines, exactly as on the wire
	Body  []byte
}

// Limits bound what Decode accepts. A zero field means no limit.
type Limits struct {
	MaxKey   int
	MaxBody  int
	MaxProps int // bytes of the properties frame
}

// DefaultLimits are the limits the server uses unless configured otherwise.
var DefaultLimits = Limits{MaxKey: DefaultMaxKey, MaxBody: DefaultMaxBody, MaxProps: DefaultMaxProps}

// Reason names why a message was rejected. The values are stable and short
// so that they serve as metric labels and log attributes.
type Reason string

const (
	ReasonFrameCount   Reason = "frame_count"
	ReasonSeqLength    Reason = "seq_length"
	ReasonUUIDLength   Reason = "uuid_length"
	ReasonProps        Reason = "properties"
	ReasonKeyTooLong   Reason = "key_too_long"
	ReasonBodyTooLong  Reason = "body_too_long"
	ReasonPropsTooLong Reason = "props_too_long"
)

// DecodeError reports a malformed message.
type DecodeError struct {
	Reason Reason
	Detail string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("kvmsg: malformed message (%s): %s", e.Reason, e.Detail)
}

func decodeErr(r Reason, format string, args ...any) error {
	return &DecodeError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Decode validates frames as one Clone message and returns it. The returned
// Msg aliases the frames. Errors are *DecodeError.
func Decode(frames [][]byte, lim Limits) (Msg, error) {
	if len(frames) != NumFrames {
		return Msg{}, decodeErr(ReasonFrameCount, "got %d frames, want %d", len(frames), NumFrames)
	}
	if n := len(frames[FrameSeq]); n != SeqLen {
		return Msg{}, decodeErr(ReasonSeqLength, "sequence frame is %d bytes, want %d", n, SeqLen)
	}
	if n := len(frames[FrameUUID]); n != 0 && n != UUIDLen {
		return Msg{}, decodeErr(ReasonUUIDLength, "uuid frame is %d bytes, want 0 or %d", n, UUIDLen)
	}
	if lim.MaxKey > 0 && len(frames[FrameKey]) > lim.MaxKey {
		return Msg{}, decodeErr(ReasonKeyTooLong, "key is %d bytes, limit %d", len(frames[FrameKey]), lim.MaxKey)
	}
	if lim.MaxBody > 0 && len(frames[FrameBody]) > lim.MaxBody {
		return Msg{}, decodeErr(ReasonBodyTooLong, "body is %d bytes, limit %d", len(frames[FrameBody]), lim.MaxBody)
	}
	if lim.MaxProps > 0 && len(frames[FrameProps]) > lim.MaxProps {
		return Msg{}, decodeErr(ReasonPropsTooLong, "properties are %d bytes, limit %d", len(frames[FrameProps]), lim.MaxProps)
	}
	if err := ValidateProps(frames[FrameProps]); err != nil {
		return Msg{}, err
	}
	return Msg{
		Key:   frames[FrameKey],
		Seq:   int64(binary.BigEndian.Uint64(frames[FrameSeq])),
		UUID:  frames[FrameUUID],
		Props: frames[FrameProps],
		Body:  frames[FrameBody],
	}, nil
}

// Frames encodes m as the five wire frames. The key, UUID, properties and
// body frames alias m; only the sequence frame is allocated.
func (m Msg) Frames() [][]byte {
	return m.AppendFrames(make([][]byte, 0, NumFrames), make([]byte, SeqLen))
}

// AppendFrames appends m's five frames to dst, writing the sequence into
// seqBuf (which must have at least SeqLen bytes and is referenced by the
// result). Batch encoders use it to share one allocation across messages.
func (m Msg) AppendFrames(dst [][]byte, seqBuf []byte) [][]byte {
	seq := seqBuf[:SeqLen:SeqLen]
	binary.BigEndian.PutUint64(seq, uint64(m.Seq))
	return append(dst, m.Key, seq, m.UUID, m.Props, m.Body)
}

// IsDelete reports whether m deletes its key (an empty body).
func (m Msg) IsDelete() bool { return len(m.Body) == 0 }

// EncodeSeq returns seq as an 8-byte big-endian frame.
func EncodeSeq(seq int64) []byte {
	b := make([]byte, SeqLen)
	binary.BigEndian.PutUint64(b, uint64(seq))
	return b
}

// Prop returns the value of property name, if m has it.
func (m Msg) Prop(name string) (string, bool) {
	v, ok := LookupProp(m.Props, name)
	return string(v), ok
}

// SetProp returns m with property name set to value (replacing any earlier
// value). The properties frame is rebuilt; the rest of m is shared.
func (m Msg) SetProp(name, value string) Msg {
	m.Props = SetProp(m.Props, name, value)
	return m
}
