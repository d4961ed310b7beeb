package client

import (
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/transport"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in, want0, want2 string
		bad              bool
	}{
		{in: "tcp://127.0.0.1:5556", want0: "tcp://127.0.0.1:5556", want2: "tcp://127.0.0.1:5558"},
		{in: "localhost:7000", want0: "tcp://localhost:7000", want2: "tcp://localhost:7002"},
		{in: "example.org", want0: "tcp://example.org:5556", want2: "tcp://example.org:5558"},
		{in: "tcp://[::1]:6000", want0: "tcp://[::1]:6000", want2: "tcp://[::1]:6002"},
		{in: "ipc:///tmp/x", bad: true},
		{in: "tcp://host:65535", bad: true},
		{in: "tcp://host:x", bad: true},
		{in: "", bad: true},
	} {
		ep, err := parseEndpoint(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: accepted as %+v", tc.in, ep)
			}
			continue
		}
		if err != nil || ep.addr(0) != tc.want0 || ep.addr(2) != tc.want2 {
			t.Errorf("%q: %v %q %q", tc.in, err, ep.addr(0), ep.addr(2))
		}
	}
}

// TestWatcherOverflow: a full watcher loses events without blocking, and
// then gets one EventLost with the count before the next event.
func TestWatcherOverflow(t *testing.T) {
	w := &watcher{ch: make(chan Event, 2)}
	for i := range 5 {
		w.deliver(Event{Type: EventUpdate, Seq: int64(i + 1)})
	}
	if got := (<-w.ch).Seq; got != 1 {
		t.Fatalf("first event seq %d", got)
	}
	if got := (<-w.ch).Seq; got != 2 {
		t.Fatalf("second event seq %d", got)
	}
	if lost := w.deliver(Event{Type: EventUpdate, Seq: 6}); lost {
		t.Fatal("event lost although the channel had room")
	}
	if ev := <-w.ch; ev.Type != EventLost || ev.Lost != 3 {
		t.Fatalf("got %+v, want EventLost of 3", ev)
	}
	if ev := <-w.ch; ev.Seq != 6 {
		t.Fatalf("got %+v, want seq 6", ev)
	}
}

func TestNewUpdate(t *testing.T) {
	a, err := newUpdate("k", []byte("v"), 1500*time.Millisecond, false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newUpdate("k", []byte("v"), 0, false)
	if string(a.UUID) == string(b.UUID) || len(a.UUID) != 16 || a.UUID[6]>>4 != 4 {
		t.Fatalf("UUIDs %x %x: want fresh version-4 UUIDs", a.UUID, b.UUID)
	}
	if ttl, _ := a.TTL(); ttl != 2*time.Second {
		t.Fatalf("ttl 1.5s sent as %v, want 2s (rounded up)", ttl)
	}
	if len(b.Props) != 0 {
		t.Fatalf("ttl 0 sent props %q", b.Props)
	}
	for _, bad := range []struct {
		key string
		val []byte
		ttl time.Duration
	}{{"", []byte("v"), 0}, {"KTHXBAI", []byte("v"), 0}, {"k", nil, 0}, {"k", []byte("v"), -time.Second}} {
		if _, err := newUpdate(bad.key, bad.val, bad.ttl, false); err == nil {
			t.Errorf("newUpdate(%q, %q, %v) accepted", bad.key, bad.val, bad.ttl)
		}
	}
}

func TestZMTPHeartbeatOptions(t *testing.T) {
	for _, tc := range []struct {
		ivl, timeout time.Duration
		want         *transport.Heartbeat
	}{
		{0, time.Second, nil},
		{-time.Second, 0, nil},
		{200 * time.Millisecond, 0, &transport.Heartbeat{Interval: 200 * time.Millisecond, Timeout: 600 * time.Millisecond, TTL: 600 * time.Millisecond}},
		{time.Second, 5 * time.Second, &transport.Heartbeat{Interval: time.Second, Timeout: 5 * time.Second, TTL: 5 * time.Second}},
	} {
		o, _, err := Options{Endpoints: []string{"127.0.0.1:5556"}, ZMTPHeartbeat: tc.ivl, ZMTPHeartbeatTimeout: tc.timeout}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		got := o.zmtpHeartbeat()
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("ZMTPHeartbeat %v, timeout %v: transport setting %+v, want %+v", tc.ivl, tc.timeout, got, tc.want)
		}
	}
}

func TestZMTPHeartbeatTimeoutShorterThanInterval(t *testing.T) {
	_, _, err := Options{Endpoints: []string{"127.0.0.1:5556"}, ZMTPHeartbeat: time.Second, ZMTPHeartbeatTimeout: 500 * time.Millisecond}.withDefaults()
	if err == nil || !strings.Contains(err.Error(), "shorter than the interval") {
		t.Fatalf("timeout below the interval: %v", err)
	}
}
