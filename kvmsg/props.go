package kvmsg

import (
	"bytes"
	"strconv"
	"time"
	"unicode/utf8"
)

// PropTTL is the property that gives a key a time to live, in whole seconds.
const PropTTL = "ttl"

// PropRefused marks a KTHXBAI that refuses or abandons a snapshot (sequence
// frame 0, no KVSYNC owed): its value says why ("busy",
// "too_many_requests", "stalled"). A client should ask again after a
// randomised back-off; the Guide's clients ignore properties.
const PropRefused = "refused"

// ValidateProps checks raw properties: zero or more lines "name=value\n",
// each ending in a newline, each name non-empty, and only printable UTF-8
// text (tabs allowed) in names and values.
func ValidateProps(raw []byte) error {
	rest := raw
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
		if eq := bytes.IndexByte(line, '='); eq == len(name) && string(line[:eq]) == name {
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

// TTLError reports a ttl property that is not a whole number of seconds in
// range.
type TTLError struct{ Value string }

func (e *TTLError) Error() string {
	return "kvmsg: ttl " + strconv.Quote(e.Value) + " is not a whole number of seconds between 0 and 2^31-1"
}

// MaxTTL is the largest ttl accepted, in seconds (about 68 years).
const MaxTTL = 1<<31 - 1

// TTL returns the message's ttl property as a duration: 0 when the property
// is absent or "0" (the key does not expire). A value that is not a decimal
// integer in [0, MaxTTL] is a *TTLError.
func (m Msg) TTL() (time.Duration, error) {
	v, ok := LookupProp(m.Props, PropTTL)
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 0 || n > MaxTTL {
		return 0, &TTLError{Value: string(clip(v))}
	}
	return time.Duration(n) * time.Second, nil
}
