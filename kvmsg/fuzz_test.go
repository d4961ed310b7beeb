package kvmsg_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/clonekv/clonekv/kvmsg"
)

// splitFrames turns fuzz input into frames: the first byte is the separator
// and the rest is split on it into at most 8 frames. Empty input is no
// frames at all.
func splitFrames(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	return bytes.SplitN(data[1:], data[:1], 8)
}

// joinFrames is the inverse of splitFrames for frames that do not contain
// sep.
func joinFrames(sep byte, frames ...[]byte) []byte {
	return append([]byte{sep}, bytes.Join(frames, []byte{sep})...)
}

// seedLimits is what the seed corpus is written against: the default key
// limit and a small body limit, so that an over-long body seed stays small.
var seedLimits = kvmsg.Limits{MaxKey: kvmsg.DefaultMaxKey, MaxBody: 64, MaxProps: 64}

var fuzzLimits = []kvmsg.Limits{{}, kvmsg.DefaultLimits, seedLimits, {MaxKey: 3, MaxBody: 3, MaxProps: 3}}

// printableText is the spec of property text: valid UTF-8, no control
// characters except tab, no DEL.
func printableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// reasonApplies reports whether reason r truly describes a defect of frames
// under lim.
func reasonApplies(r kvmsg.Reason, frames [][]byte, lim kvmsg.Limits) bool {
	if r == kvmsg.ReasonFrameCount {
		return len(frames) != kvmsg.NumFrames
	}
	if len(frames) != kvmsg.NumFrames {
		return false // a wrong frame count must be reported as such
	}
	switch r {
	case kvmsg.ReasonSeqLength:
		return len(frames[kvmsg.FrameSeq]) != kvmsg.SeqLen
	case kvmsg.ReasonUUIDLength:
		n := len(frames[kvmsg.FrameUUID])
		return n != 0 && n != kvmsg.UUIDLen
	case kvmsg.ReasonKeyTooLong:
		return lim.MaxKey > 0 && len(frames[kvmsg.FrameKey]) > lim.MaxKey
	case kvmsg.ReasonBodyTooLong:
		return lim.MaxBody > 0 && len(frames[kvmsg.FrameBody]) > lim.MaxBody
	case kvmsg.ReasonPropsTooLong:
		return lim.MaxProps > 0 && len(frames[kvmsg.FrameProps]) > lim.MaxProps
	case kvmsg.ReasonProps:
		return kvmsg.ValidateProps(frames[kvmsg.FrameProps]) != nil
	}
	return false
}

func checkDecode(t *testing.T, frames [][]byte, lim kvmsg.Limits) {
	t.Helper()
	m, err := kvmsg.Decode(frames, lim)
	if err != nil {
		var de *kvmsg.DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("Decode error %v (%T) is not a *DecodeError", err, err)
		}
		if !reasonApplies(de.Reason, frames, lim) {
			t.Fatalf("Decode(%q, %+v) rejected with reason %q, which does not apply", frames, lim, de.Reason)
		}
		return
	}
	if len(frames) != kvmsg.NumFrames {
		t.Fatalf("Decode accepted %d frames", len(frames))
	}
	for _, r := range []kvmsg.Reason{kvmsg.ReasonSeqLength, kvmsg.ReasonUUIDLength, kvmsg.ReasonKeyTooLong, kvmsg.ReasonBodyTooLong, kvmsg.ReasonPropsTooLong, kvmsg.ReasonProps} {
		if reasonApplies(r, frames, lim) {
			t.Fatalf("Decode(%q, %+v) accepted a message with defect %q", frames, lim, r)
		}
	}
	if err := kvmsg.ValidateProps(m.Props); err != nil {
		t.Fatalf("decoded props %q fail ValidateProps: %v", m.Props, err)
	}
	if want := int64(uint64(frames[1][0])<<56 | uint64(frames[1][1])<<48 | uint64(frames[1][2])<<40 | uint64(frames[1][3])<<32 |
		uint64(frames[1][4])<<24 | uint64(frames[1][5])<<16 | uint64(frames[1][6])<<8 | uint64(frames[1][7])); m.Seq != want {
		t.Fatalf("Seq = %d, want %d from % x", m.Seq, want, frames[1])
	}
	out := m.Frames()
	if len(out) != len(frames) {
		t.Fatalf("Frames() gave %d frames, want %d", len(out), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(out[i], frames[i]) {
			t.Fatalf("frame %d round-trips to %q, want %q", i, out[i], frames[i])
		}
	}
	if m.IsDelete() != (len(frames[kvmsg.FrameBody]) == 0) {
		t.Fatalf("IsDelete() = %v with body %q", m.IsDelete(), frames[kvmsg.FrameBody])
	}
	// Every property line is found by LookupProp (the first of a name wins).
	seen := map[string]bool{}
	for _, line := range strings.SplitAfter(string(m.Props), "\n") {
		if line == "" || line == "\n" { // the Go port's empty trailing line
			continue
		}
		name, value, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		if seen[name] {
			continue
		}
		seen[name] = true
		if v, ok := m.Prop(name); !ok || v != value {
			t.Fatalf("Prop(%q) = %q, %v; want %q from props %q", name, v, ok, value, m.Props)
		}
	}
	_, _ = m.TTL()
	_, _ = m.Deadline(time.Now())
}

func FuzzDecode(f *testing.F) {
	uuid := []byte(uuid16)
	f.Add([]byte{})
	f.Add(joinFrames('|', []byte("key"), be8(1), nil, nil, []byte("v")))
	f.Add(joinFrames('|', []byte("/a/b"), be8(-1), uuid, []byte("ttl=30\nx=y\n"), []byte("value")))
	f.Add(joinFrames('|', []byte("HUGZ"), be8(0), nil, nil, nil))
	f.Add(joinFrames('#', []byte("k"), be8(0), nil, []byte("a=\xc3\x28\n"), nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := splitFrames(data)
		for _, lim := range fuzzLimits {
			checkDecode(t, frames, lim)
		}
		// Accepted under a limit implies accepted with no limit.
		if _, err := kvmsg.Decode(frames, kvmsg.DefaultLimits); err == nil {
			if _, err := kvmsg.Decode(frames, kvmsg.Limits{}); err != nil {
				t.Fatalf("accepted under default limits but rejected with none: %v", err)
			}
		}
	})
}

// validName and validValue are the conditions under which SetProp must
// produce valid properties.
func validName(s string) bool {
	return s != "" && printableText(s) && !strings.ContainsAny(s, "=\n")
}

func validValue(s string) bool { return printableText(s) && !strings.Contains(s, "\n") }

// modelSetProp is an independent statement of what SetProp does on valid
// properties: drop every line named name, put name=value where the first one
// was, or at the end.
func modelSetProp(raw []byte, name, value string) string {
	var b strings.Builder
	placed := false
	for _, line := range strings.SplitAfter(string(raw), "\n") {
		if line == "" || line == "\n" {
			continue
		}
		n, _, _ := strings.Cut(line, "=")
		if n != name {
			b.WriteString(line)
			continue
		}
		if !placed {
			b.WriteString(name + "=" + value + "\n")
			placed = true
		}
	}
	if !placed {
		b.WriteString(name + "=" + value + "\n")
	}
	return b.String()
}

func modelLookup(raw []byte, name string) (string, bool) {
	for _, line := range strings.SplitAfter(string(raw), "\n") {
		n, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		if ok && n == name {
			return v, true
		}
	}
	return "", false
}

func FuzzProps(f *testing.F) {
	f.Add([]byte(""), "ttl", "30")
	f.Add([]byte("ttl=30\n"), "ttl", "0")
	f.Add([]byte("a=1\nb=2\na=3\n"), "a", "9")
	f.Add([]byte("a=1\nb=2\n"), "c", "x=y")
	f.Add([]byte("ttl=30\n"), "tt", "1")
	f.Add([]byte("a=1"), "a", "2")
	f.Add([]byte("=1\n"), "", "")
	f.Add([]byte("a=\x00\n"), "a", "\x01")
	f.Add([]byte("n=héllo ✓\n"), "n", "\xc3\x28")
	f.Add([]byte("a=1\n"), "a=b", "c\nd=e")
	f.Add([]byte("\n"), "ttl", "1.5")
	f.Add([]byte("ttl=1700000030\n\n"), "x", "y")
	f.Fuzz(func(t *testing.T, raw []byte, name, value string) {
		orig := append([]byte(nil), raw...)
		verr := kvmsg.ValidateProps(raw)
		if verr != nil {
			var de *kvmsg.DecodeError
			if !errors.As(verr, &de) || de.Reason != kvmsg.ReasonProps {
				t.Fatalf("ValidateProps(%q) = %v, want a *DecodeError with reason %q", raw, verr, kvmsg.ReasonProps)
			}
		}
		v, ok := kvmsg.LookupProp(raw, name)
		out := kvmsg.SetProp(raw, name, value)
		_, _ = kvmsg.Msg{Props: raw}.TTL()
		if !bytes.Equal(raw, orig) {
			t.Fatalf("props %q were modified to %q", orig, raw)
		}
		if verr != nil {
			return
		}
		if mv, mok := modelLookup(raw, name); ok != mok || string(v) != mv {
			t.Fatalf("LookupProp(%q, %q) = %q, %v; want %q, %v", raw, name, v, ok, mv, mok)
		}
		if !validName(name) || !validValue(value) {
			return
		}
		if err := kvmsg.ValidateProps(out); err != nil {
			t.Fatalf("SetProp(%q, %q, %q) = %q is invalid: %v", raw, name, value, out, err)
		}
		if got, ok := kvmsg.LookupProp(out, name); !ok || string(got) != value {
			t.Fatalf("LookupProp(SetProp(%q, %q, %q)) = %q, %v; want %q, true", raw, name, value, got, ok, value)
		}
		if want := modelSetProp(raw, name, value); string(out) != want {
			t.Fatalf("SetProp(%q, %q, %q) = %q, want %q", raw, name, value, out, want)
		}
	})
}

// TestSeedCorpus checks that every FuzzDecode seed file is what its name
// says: "bad-<reason>-..." is rejected with that reason under seedLimits,
// "ok-..." is accepted. It keeps the corpus honest as a regression suite.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[kvmsg.Reason]int{}
	for _, e := range entries {
		name := e.Name()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
			!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			t.Errorf("%s: not a one-[]byte corpus file: %q", name, b)
			continue
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		frames := splitFrames([]byte(s))
		_, derr := kvmsg.Decode(frames, seedLimits)
		switch kind, rest, _ := strings.Cut(name, "-"); kind {
		case "ok":
			if derr != nil {
				t.Errorf("%s: rejected: %v", name, derr)
			}
		case "bad":
			want := kvmsg.Reason(strings.SplitN(rest, "-", 2)[0])
			var de *kvmsg.DecodeError
			if !errors.As(derr, &de) || de.Reason != want {
				t.Errorf("%s: Decode = %v, want reason %q", name, derr, want)
			}
			reasons[want]++
		default:
			t.Errorf("%s: name should start with ok- or bad-", name)
		}
	}
	for _, r := range []kvmsg.Reason{kvmsg.ReasonFrameCount, kvmsg.ReasonSeqLength, kvmsg.ReasonUUIDLength, kvmsg.ReasonProps, kvmsg.ReasonKeyTooLong, kvmsg.ReasonBodyTooLong, kvmsg.ReasonPropsTooLong} {
		if reasons[r] == 0 {
			t.Errorf("seed corpus has no bad-%s-* case", r)
		}
	}
}
