package kvmsg_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

func TestValidateProps(t *testing.T) {
	valid := []string{
		"",
		"a=1\n",
		"ttl=30\nowner=alice\n",
		"a=\n",
		"a==\n",
		"a=b=c\n",
		"a b=c d\n",
		"tab=\tx\t\n",
		"name=héllo ✓ 日本\n",
		"dup=1\ndup=2\n",
		strings.Repeat("k=v\n", 1000),
		"\n",      // the Go port's kvmsg with no properties
		"a=1\n\n", // ...and with one: a trailing empty line
		"a=1\nb=2\n\n",
	}
	for _, raw := range valid {
		if err := kvmsg.ValidateProps([]byte(raw)); err != nil {
			t.Errorf("ValidateProps(%q) = %v, want nil", raw, err)
		}
	}
	invalid := []string{
		"a=1",
		"a=1\nb",
		"\n\n",
		"\na=1\n",
		"a=1\n\nb=2\n",
		"a=1\n\n\n",
		"a\n",
		"=\n",
		"=1\n",
		"a=\x00\n",
		"\x00=1\n",
		"a=\x01\n",
		"a=\x1f\n",
		"a=\x7f\n",
		"a=1\r\n",
		"a=\xc3\x28\n",
		"a=\xff\n",
		"a=\xed\xa0\x80\n", // UTF-16 surrogate encoded as UTF-8
		"\xc0\x80=1\n",     // overlong NUL
		"a=1\nb=\x02\n",
	}
	for _, raw := range invalid {
		err := kvmsg.ValidateProps([]byte(raw))
		var de *kvmsg.DecodeError
		if !errors.As(err, &de) {
			t.Errorf("ValidateProps(%q) = %v, want a *DecodeError", raw, err)
			continue
		}
		if de.Reason != kvmsg.ReasonProps {
			t.Errorf("ValidateProps(%q) reason %q, want %q", raw, de.Reason, kvmsg.ReasonProps)
		}
	}
}

func TestLookupProp(t *testing.T) {
	tests := []struct {
		raw, name string
		val       string
		ok        bool
	}{
		{"", "ttl", "", false},
		{"ttl=30\n", "ttl", "30", true},
		{"a=1\nttl=30\nb=2\n", "ttl", "30", true},
		{"a=1\nb=2\nttl=30\n", "ttl", "30", true},
		{"a=1\nb=2\n", "ttl", "", false},
		{"ttl=30\n", "tt", "", false},
		{"ttl=30\n", "ttlx", "", false},
		{"ttl=30\n", "TTL", "", false},
		{"xttl=30\n", "ttl", "", false},
		{"a=\n", "a", "", true},
		{"a=b=c\n", "a", "b=c", true},
		{"a=b=c\n", "a=b", "", false},
		{"a=1\na=2\n", "a", "1", true},
		{"a=1\n", "", "", false},
		{"k=héllo ✓\n", "k", "héllo ✓", true},
	}
	for _, tt := range tests {
		v, ok := kvmsg.LookupProp([]byte(tt.raw), tt.name)
		if string(v) != tt.val || ok != tt.ok {
			t.Errorf("LookupProp(%q, %q) = %q, %v; want %q, %v", tt.raw, tt.name, v, ok, tt.val, tt.ok)
		}
	}
}

func TestSetProp(t *testing.T) {
	tests := []struct {
		name, raw, pname, value, want string
	}{
		{"empty", "", "ttl", "30", "ttl=30\n"},
		{"append new", "a=1\nb=2\n", "c", "3", "a=1\nb=2\nc=3\n"},
		{"replace first keeps order", "a=1\nb=2\nc=3\n", "a", "9", "a=9\nb=2\nc=3\n"},
		{"replace middle keeps order", "a=1\nb=2\nc=3\n", "b", "9", "a=1\nb=9\nc=3\n"},
		{"replace last keeps order", "a=1\nb=2\nc=3\n", "c", "9", "a=1\nb=2\nc=9\n"},
		{"duplicates collapse at first", "a=1\nb=2\na=3\nc=4\na=5\n", "a", "9", "a=9\nb=2\nc=4\n"},
		{"duplicates collapse, same value", "a=1\na=1\n", "a", "1", "a=1\n"},
		{"empty value", "a=1\n", "a", "", "a=\n"},
		{"value with '='", "a=1\n", "a", "x=y", "a=x=y\n"},
		{"prefix name is a different prop", "ttl=1\n", "tt", "2", "ttl=1\ntt=2\n"},
		{"longer name is a different prop", "tt=1\n", "ttl", "2", "tt=1\nttl=2\n"},
		{"Go port's empty set", "\n", "ttl", "5", "ttl=5\n"},
		{"Go port's trailing empty line", "a=1\n\n", "b", "2", "a=1\nb=2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Give raw spare capacity so that any write past its length shows.
			raw := make([]byte, len(tt.raw), len(tt.raw)+64)
			copy(raw, tt.raw)
			spare := raw[:cap(raw)]
			for i := len(tt.raw); i < len(spare); i++ {
				spare[i] = '#'
			}
			got := kvmsg.SetProp(raw, tt.pname, tt.value)
			if string(got) != tt.want {
				t.Errorf("SetProp(%q, %q, %q) = %q, want %q", tt.raw, tt.pname, tt.value, got, tt.want)
			}
			if string(raw) != tt.raw || strings.Trim(string(spare[len(tt.raw):]), "#") != "" {
				t.Errorf("SetProp modified its input: %q", spare)
			}
			if err := kvmsg.ValidateProps(got); err != nil {
				t.Errorf("SetProp result invalid: %v", err)
			}
			if v, ok := kvmsg.LookupProp(got, tt.pname); !ok || string(v) != tt.value {
				t.Errorf("LookupProp after SetProp = %q, %v; want %q, true", v, ok, tt.value)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	ok := []struct {
		props string
		want  time.Duration
	}{
		{"", 0},
		{"other=1\n", 0},
		{"TTL=30\n", 0},
		{"ttlx=30\n", 0},
		{"ttl=0\n", 0},
		{"ttl=30\n", 30 * time.Second},
		{"a=1\nttl=30\nb=2\n", 30 * time.Second},
		{"ttl=1\n", time.Second},
		{"ttl=2147483647\n", kvmsg.MaxTTL * time.Second},
		{"ttl=1.5\n", 1500 * time.Millisecond},
		{"ttl=0.25\n", 250 * time.Millisecond},
		{"ttl=30.0\n", 30 * time.Second},
		{"ttl=0.0\n", 0},
		{"ttl=1.0000000019\n", time.Second + time.Nanosecond},
		{"ttl=7\n\n", 7 * time.Second},
	}
	for _, tt := range ok {
		d, err := kvmsg.Msg{Props: []byte(tt.props)}.TTL()
		if err != nil || d != tt.want {
			t.Errorf("TTL() with props %q = %v, %v; want %v, nil", tt.props, d, err, tt.want)
		}
	}
	bad := []string{
		"abc",
		"-1",
		"-1.5",
		"1.",
		".5",
		"1.5.2",
		"1,5",
		"2147483647.5",
		"",
		" 30",
		"30 ",
		"30s",
		"0x10",
		"1e3",
		"2147483648",
		"9223372036854775807",
		"9223372036854775808",
		"99999999999999999999999999",
	}
	for _, v := range bad {
		d, err := kvmsg.Msg{Props: []byte("ttl=" + v + "\n")}.TTL()
		var te *kvmsg.TTLError
		if !errors.As(err, &te) {
			t.Errorf("TTL() with ttl=%q = %v, %v; want a *TTLError", v, d, err)
			continue
		}
		if te.Value != v {
			t.Errorf("TTLError.Value = %q, want %q", te.Value, v)
		}
		if d != 0 {
			t.Errorf("TTL() with ttl=%q returned duration %v alongside the error", v, d)
		}
		if !strings.Contains(err.Error(), "ttl") {
			t.Errorf("TTLError text %q does not mention ttl", err.Error())
		}
	}
}

// TestDeadline: a server's ttl is read as relative seconds below 1e9, as
// absolute Unix seconds (whole: the Guide's Go servers; a float: the Python
// ones) up to 1e11, and as absolute Unix milliseconds (the C servers) above.
func TestDeadline(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ok := []struct {
		ttl  string
		want time.Time
	}{
		{"", time.Time{}},
		{"ttl=0\n", time.Time{}},
		{"ttl=30\n", now.Add(30 * time.Second)},
		{"ttl=1.5\n", now.Add(1500 * time.Millisecond)},
		{"ttl=999999999\n", now.Add(999999999 * time.Second)},
		{"ttl=1700000030\n", time.Unix(1_700_000_030, 0)},           // Go: time.Now().Add(ttl).Unix()
		{"ttl=1700000030.250000\n", time.Unix(1_700_000_030, 25e7)}, // Python: time.time() + ttl
		{"ttl=1700000030123\n", time.UnixMilli(1_700_000_030_123)},  // C: zclock_time() + ttl*1000
		{"ttl=1699999990\n", time.Unix(1_699_999_990, 0)},           // passed: returned as it is
	}
	for _, tt := range ok {
		d, err := kvmsg.Msg{Props: []byte(tt.ttl)}.Deadline(now)
		if err != nil || !d.Equal(tt.want) {
			t.Errorf("Deadline with props %q = %v, %v; want %v", tt.ttl, d, err, tt.want)
		}
	}
	for _, v := range []string{"abc", "-5", "1e9", " 5", "99999999999999999999", "1."} {
		if d, err := (kvmsg.Msg{Props: []byte("ttl=" + v + "\n")}).Deadline(now); err == nil {
			t.Errorf("Deadline with ttl=%q = %v, want a *TTLError", v, d)
		}
	}
}
