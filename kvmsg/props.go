package kvmsg

import (
	"bytes"
	"strconv"
	"time"
	"unicode/utf8"
)

// PropTTL is the property that gives a key a time to live, in seconds.
const PropTTL = "ttl"

// PropRefused marks a KTHXBAI that refuses or abandons a snapshot (sequence
// frame 0, no KVSYNC owed): its value says why ("busy",
// "too_many_requests", "stalled"). A client should ask again after a
// randomised back-off; the Guide's clients ignore properties.
const PropRefused = "refused"

// Properties of the resume extension (README "Protocol additions"): a
// server that can resume says resume=1 on its KTHXBAI and HUGZ; a client
// that saw it asks with a third ICANHAZ? frame holding history= and since=;
// the server's KTHXBAI then says resume=delta (only the updates after since
// were sent: merge them) or resume=full with a reason (a whole snapshot was
// sent: replace the map with it).
const (
	PropResume  = "resume"
	PropSince   = "since"
	PropReason  = "reason"
	PropHistory = "history"

	ResumeOffered = "1"
	ResumeDelta   = "delta"
	ResumeFull    = "full"
)

// ValidateProps checks raw properties: zero or more lines "name=value\n",
// each ending in a newline, each name non-empty, and only printable UTF-8
// text (tabs allowed) in names and values. One empty line at the end is
// allowed and means nothing: the Go port of the Guide's kvmsg joins its
// properties with "\n" and appends one more, so it sends "\n" for no
// properties. Any other empty line is malformed.
func ValidateProps(raw []byte) error {
	rest := trimEmptyTail(raw)
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return decodeErr(ReasonProps, "property line %q has no trailing newline", clip(rest))
		}
		line := rest[:nl]
		eq := bytes.IndexByte(line, '=')
		if eq < 0 {
			return decodeErr(ReasonProps, "property line %q has no '='", clip(line))
		}
		if eq == 0 {
			return decodeErr(ReasonProps, "property line %q has an empty name", clip(line))
		}
		if !printable(line) {
			return decodeErr(ReasonProps, "property line %q is not printable UTF-8", clip(line))
		}
		rest = rest[nl+1:]
	}
	return nil
}

// trimEmptyTail drops the one empty line the Go port's kvmsg ends its
// properties with: "\n" alone, or a second newline after the last line.
func trimEmptyTail(raw []byte) []byte {
	if len(raw) == 1 && raw[0] == '\n' || bytes.HasSuffix(raw, []byte("\n\n")) {
		return raw[:len(raw)-1]
	}
	return raw
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func clip(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// LookupProp finds property name in raw properties (assumed valid). The
// returned value aliases raw.
func LookupProp(raw []byte, name string) ([]byte, bool) {
	rest := raw
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			nl = len(rest)
		}
		line := rest[:nl]
		if eq := bytes.IndexByte(line, '='); eq == len(name) && string(line[:eq]) == name {
			return line[eq+1:], true
		}
		if nl == len(rest) {
			break
		}
		rest = rest[nl+1:]
	}
	return nil, false
}

// SetProp returns new raw properties with name set to value, keeping the
// order of the other properties and appending name if it is new.
func SetProp(raw []byte, name, value string) []byte {
	out := make([]byte, 0, len(raw)+len(name)+len(value)+2)
	found := false
	rest := raw
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			nl = len(rest)
		}
		line := rest[:nl]
		if len(line) == 0 {
			// The Go port's empty trailing line: dropped.
		} else if eq := bytes.IndexByte(line, '='); eq == len(name) && string(line[:eq]) == name {
			if !found {
				out = append(append(append(append(out, name...), '='), value...), '\n')
				found = true
			}
		} else {
			out = append(append(out, line...), '\n')
		}
		if nl == len(rest) {
			break
		}
		rest = rest[nl+1:]
	}
	if !found {
		out = append(append(append(append(out, name...), '='), value...), '\n')
	}
	return out
}

// TTLError reports a ttl property that is not a number of seconds in
// range.
type TTLError struct{ Value string }

func (e *TTLError) Error() string {
	return "kvmsg: ttl " + strconv.Quote(e.Value) + " is not a number of seconds between 0 and 2^31-1 (digits, optionally a '.' and more digits)"
}

// MaxTTL is the largest ttl accepted, in seconds (about 68 years).
const MaxTTL = 1<<31 - 1

// TTL returns the message's ttl property as a client means it in a KVSET: a
// time to live, in seconds. 0 when the property is absent or zero (the key
// does not expire). Whole seconds ("30") and decimals ("1.5", as a Python
// client computing a float may send) are accepted, down to the nanosecond;
// anything else (signs, spaces, exponents, units, hex, more than MaxTTL) is
// a *TTLError.
func (m Msg) TTL() (time.Duration, error) {
	v, ok := LookupProp(m.Props, PropTTL)
	if !ok {
		return 0, nil
	}
	whole, frac, err := parseDecimal(v)
	if err != nil || whole > MaxTTL || whole == MaxTTL && frac > 0 {
		return 0, &TTLError{Value: string(clip(v))}
	}
	return time.Duration(whole)*time.Second + time.Duration(frac), nil
}

// Thresholds for reading a ttl a server sent (see Deadline). A relative ttl
// of 1e9 s is over 31 years; an absolute time in seconds of 1e11 is the
// year 5138, and in milliseconds 1e11 is 1973.
const (
	absSecondsFrom = 1_000_000_000   // 2001-09-09 as Unix seconds
	absMillisFrom  = 100_000_000_000 // 1973-03-03 as Unix milliseconds
)

// Deadline reads the ttl property of a message a server sent (a KVSYNC or a
// KVPUB) as the instant the key expires, or the zero Time when it does not.
// Servers disagree on what they send, so the value's size decides:
//
//   - below 1e9: a time to live in seconds from now (clonekv's server, and
//     every server's KVPUB, which carry the ttl as the client sent it);
//   - from 1e9 to below 1e11: an absolute Unix time in seconds, possibly
//     with a fraction (the Guide's Go servers store time.Now()+ttl as whole
//     seconds, the Python ones time.time()+ttl as a float, and send that in
//     their KVSYNCs and expiry deletes);
//   - from 1e11: an absolute Unix time in milliseconds (the Guide's C
//     servers, zclock_time()+ttl*1000).
//
// A deadline already passed is returned as it is (before now).
func (m Msg) Deadline(now time.Time) (time.Time, error) {
	v, ok := LookupProp(m.Props, PropTTL)
	if !ok {
		return time.Time{}, nil
	}
	whole, frac, err := parseDecimal(v)
	if err != nil || whole > 1<<53 {
		return time.Time{}, &TTLError{Value: string(clip(v))}
	}
	switch {
	case whole == 0 && frac == 0:
		return time.Time{}, nil
	case whole < absSecondsFrom:
		return now.Add(time.Duration(whole)*time.Second + time.Duration(frac)), nil
	case whole < absMillisFrom:
		return time.Unix(whole, frac), nil
	default:
		return time.UnixMilli(whole).Add(time.Duration(frac / 1e3)), nil
	}
}

// parseDecimal reads digits with an optional '.' and more digits: the whole
// part (at most 18 digits) and the fraction in nanoseconds (digits past the
// ninth are dropped).
func parseDecimal(v []byte) (whole, fracNanos int64, err error) {
	intPart, fracPart, hasDot := bytes.Cut(v, []byte{'.'})
	if len(intPart) == 0 || len(intPart) > 18 || hasDot && len(fracPart) == 0 {
		return 0, 0, strconv.ErrSyntax
	}
	for _, c := range intPart {
		if c < '0' || c > '9' {
			return 0, 0, strconv.ErrSyntax
		}
		whole = whole*10 + int64(c-'0')
	}
	scale := int64(100_000_000)
	for _, c := range fracPart {
		if c < '0' || c > '9' {
			return 0, 0, strconv.ErrSyntax
		}
		fracNanos += int64(c-'0') * scale
		scale /= 10
	}
	return whole, fracNanos, nil
}
