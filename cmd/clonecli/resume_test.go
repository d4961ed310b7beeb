package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/server"
)

// TestWatchSince: watch --since SEQ prints what changed after SEQ, then
// follows. With resume, that is the server's delta (the deletes too);
// without it (a server that does not offer resume, or SEQ above the
// server's), the snapshot's keys set after SEQ, and stderr says that
// deletes could not be shown.
func TestWatchSince(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		cfg   server.Config
		since string
		want  []string // the lines up to and including resync-done
		warn  string   // on stderr; "" none
	}{
		{"delta", server.Config{}, "3", []string{
			"resumed 6 after 3 from ", "update 4 /s/a 2", "delete 5 /s/b", "update 6 /s/d 1", "resync-done 6 2 keys from ", // only the keys changed
		}, ""},
		{"not-offered", server.Config{ResumeWindow: -1}, "3", []string{
			"full 6 not_offered ", "update 4 /s/a 2", "update 6 /s/d 1", "resync-done 6 3 keys from ",
		}, "keys deleted after 3 cannot be shown"},
		{"ahead", server.Config{}, "1000", []string{
			"full 6 ahead ", "resync-done 6 3 keys from ",
		}, "ahead: that sequence is above the server's own"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ep := startServerWith(t, tc.cfg)
			for _, kv := range [][2]string{{"/s/a", "1"}, {"/s/b", "1"}, {"/s/c", "1"}, {"/s/a", "2"}} {
				cli(t, nil, "--server", ep, "set", kv[0], kv[1]).must(t, 0)
			}
			cli(t, nil, "--server", ep, "del", "/s/b").must(t, 0)
			cli(t, nil, "--server", ep, "set", "/s/d", "1").must(t, 0)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			watch := exec.CommandContext(ctx, cliBin, "--server", ep, "watch", "/s/", "--since", tc.since, "--stats", "100ms")
			lines, stderr := pipeLines(t, watch)
			for i, want := range tc.want {
				select {
				case l, ok := <-lines:
					if !ok || !strings.HasPrefix(l, want) {
						t.Fatalf("line %d: %q, want %q...; stderr: %s", i, l, want, stderr.String())
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("no line %d (%q) within 10s; stderr: %s", i, want, stderr.String())
				}
			}
			// Then it follows.
			cli(t, nil, "--server", ep, "set", "/s/e", "1").must(t, 0)
			if l := expectLine(t, lines, "", 5*time.Second, stderr.String); l != "update 7 /s/e 1" {
				t.Fatalf("after the join: %q, want update 7 /s/e 1", l)
			}
			kind := "resumes=1 full=0"
			if tc.name != "delta" {
				kind = "resumes=0 full=1"
			}
			waitStderr(t, stderr, kind)
			if tc.warn != "" && !strings.Contains(stderr.String(), tc.warn) {
				t.Fatalf("stderr %q, want %q", stderr.String(), tc.warn)
			}
			if tc.warn == "" && strings.Contains(stderr.String(), "cannot be shown") {
				t.Fatalf("a warning for a delta: %s", stderr.String())
			}
		})
	}
}

// waitStderr waits until stderr holds want (a --stats line).
func waitStderr(t *testing.T, stderr *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("stderr has no %q within 10s: %s", want, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatchSinceUsage: bad --since values are usage errors.
func TestWatchSinceUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"watch", "--since", "-1"},
		{"watch", "--since-history", "aa"},
		{"watch", "--stats", "-1s"},
	} {
		if r := cli(t, nil, append([]string{"--server", "tcp://127.0.0.1:1"}, args...)...); r.code != exitUsage {
			t.Fatalf("%q: exit %d, want %d (stderr %s)", args, r.code, exitUsage, r.stderr)
		}
	}
}
