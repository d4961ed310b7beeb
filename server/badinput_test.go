package server

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
)

// TestBadInputNeverStopsTheServer sends every kind of malformed message the
// protocol decisions list, on both ports, and after each checks that the
// server still serves snapshots and updates and counted the rejection.
func TestBadInputNeverStopsTheServer(t *testing.T) {
	srv := startServer(t, Config{Limits: kvmsg.Limits{MaxKey: 32, MaxBody: 64}})
	p := newPeer(t, srv.Port())
	push, sub, dealer := p.push(), p.sub("/ok/"), p.dealer()
	subscribed(t, push, sub, "/ok/ping")

	seq8 := make([]byte, 8)
	uuid := bytes.Repeat([]byte{1}, 16)
	valid := func(key string) [][]byte { return kvmsg.Msg{Key: []byte(key), Body: []byte("v")}.Frames() }
	withProps := func(props string) [][]byte {
		return [][]byte{[]byte("/bad/p"), seq8, uuid, []byte(props), []byte("v")}
	}
	collectorCases := []struct {
		name   string
		frames [][]byte
		reason string
	}{
		{"one frame", [][]byte{[]byte("/bad/1")}, "frame_count"},
		{"four frames", valid("/bad/4")[:4], "frame_count"},
		{"seven frames", append(valid("/bad/7"), []byte("x"), []byte("y")), "frame_count"},
		{"three-byte sequence", [][]byte{[]byte("/bad/s"), {0, 0, 1}, nil, nil, []byte("v")}, "seq_length"},
		{"uuid of 5 bytes", [][]byte{[]byte("/bad/u"), seq8, {1, 2, 3, 4, 5}, nil, []byte("v")}, "uuid_length"},
		{"ttl=abc", withProps("ttl=abc\n"), "ttl"},
		{"negative ttl", withProps("ttl=-5\n"), "ttl"},
		{"oversized key", valid("/bad/" + strings.Repeat("k", 40)), "key_too_long"},
		{"oversized body", [][]byte{[]byte("/bad/b"), seq8, nil, nil, bytes.Repeat([]byte("b"), 65)}, "body_too_long"},
		{"properties without trailing newline", withProps("ttl=5"), "properties"},
		{"binary properties", withProps("a=\x00\x01\xff\n"), "properties"},
		{"empty key", [][]byte{nil, seq8, nil, nil, []byte("v")}, "empty_key"},
		{"reserved key", valid(kvmsg.KeySnapshotEnd), "reserved_key"},
	}
	for i, tc := range collectorCases {
		t.Run("collector/"+tc.name, func(t *testing.T) {
			before := srv.Stats().RejectedTotal(stats.SourceCollector)
			send(t, push, tc.frames...)
			waitFor(t, 3*time.Second, "reject counted", func() bool {
				return srv.Stats().RejectedTotal(stats.SourceCollector) == before+1
			})
			if n := rejectCount(srv, stats.SourceCollector, tc.reason); n < 1 {
				t.Errorf("no %q reject counted: %+v", tc.reason, srv.Stats().Rejects())
			}
			stillServes(t, srv, push, sub, dealer, i)
		})
	}

	snapshotCases := []struct {
		name   string
		frames [][]byte
		reason string
	}{
		{"one frame", [][]byte{[]byte("garbage")}, "frame_count"},
		{"ICANHAZ? without subtree", [][]byte{[]byte(kvmsg.CmdSnapshot)}, "frame_count"},
		{"unknown command", [][]byte{[]byte("GIMME"), []byte("/ok/")}, "unknown_command"},
		{"four frames", [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/ok/"), []byte("history=x\n"), []byte("extra")}, "frame_count"},
		// A third frame is the resume extension's: a malformed one is
		// counted and answered as a plain ICANHAZ? (full, bad_request).
		{"three frames", [][]byte{[]byte(kvmsg.CmdSnapshot), []byte("/ok/"), []byte("extra")}, "resume_request"},
		{"subtree too long", [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(strings.Repeat("s", 40))}, "subtree_too_long"},
	}
	for i, tc := range snapshotCases {
		t.Run("snapshot/"+tc.name, func(t *testing.T) {
			before := srv.Stats().RejectedTotal(stats.SourceSnapshot)
			send(t, dealer, tc.frames...)
			waitFor(t, 3*time.Second, "reject counted", func() bool {
				return srv.Stats().RejectedTotal(stats.SourceSnapshot) == before+1
			})
			if n := rejectCount(srv, stats.SourceSnapshot, tc.reason); n < 1 {
				t.Errorf("no %q reject counted: %+v", tc.reason, srv.Stats().Rejects())
			}
			if tc.reason == "resume_request" {
				end := recvMsg(t, dealer, 3*time.Second)
				for string(end.Key) != kvmsg.KeySnapshotEnd {
					end = recvMsg(t, dealer, 3*time.Second)
				}
				if v, _ := kvmsg.LookupProp(end.Props, kvmsg.PropReason); string(v) != "bad_request" {
					t.Fatalf("malformed resume request answered with KTHXBAI %q, want reason=bad_request", end.Props)
				}
			}
			// The rejected request got no other answer: the next message on
			// the DEALER belongs to the next, valid request.
			stillServes(t, srv, push, sub, dealer, 100+i)
		})
	}
	if snap, _ := snapshot(t, dealer, "/bad/", 2*time.Second); len(snap) != 0 {
		t.Errorf("rejected updates were stored: %v", keys(snap))
	}
}

func rejectCount(srv *Server, src stats.Source, reason string) int64 {
	for _, r := range srv.Stats().Rejects() {
		if r.Source == src && r.Reason == reason {
			return r.Count
		}
	}
	return 0
}

// stillServes checks an update is sequenced, published and stored, and a
// snapshot is answered, right after bad input.
func stillServes(t *testing.T, srv *Server, ps, ss, ds zsock, i int) {
	t.Helper()
	want := srv.Stats().Sequence.Load() + 1
	key := fmt.Sprintf("/ok/%03d", i)
	set(t, ps, key, "after")
	m := recvMsg(t, ss, 3*time.Second)
	if string(m.Key) != key || m.Seq != want {
		t.Fatalf("after bad input: KVPUB %q seq %d, want %q seq %d", m.Key, m.Seq, key, want)
	}
	snap, end := snapshot(t, ds, key, 3*time.Second)
	if len(snap) != 1 || end.Seq != want {
		t.Fatalf("after bad input: snapshot %v seq %d, want [%s] seq %d", keys(snap), end.Seq, key, want)
	}
}
