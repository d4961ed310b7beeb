package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// TestSnapshotStreamSurvivesCompaction: a snapshot stream that started
// before the map compacted (issue 16) delivers exactly the view it started
// with. The joiner reads the stream slowly while far more overwrites and
// deletes than the map holds are applied meanwhile: about 5 MiB of garbage
// on 1 MiB of live records, past kvmap's threshold (a quarter of the slab
// bytes and 256 KiB) many times over, so every slab the view reads is
// compacted away from the map while the stream is still walking it.
func TestSnapshotStreamSurvivesCompaction(t *testing.T) {
	srv := startServer(t, Config{})
	p := newPeer(t, srv.Port())
	push := p.push()
	const keys = 10_000
	pad := strings.Repeat("x", 48)
	seq0 := srv.Stats().Sequence.Load()
	for i := range keys {
		set(t, push, fmt.Sprintf("/c/%05d", i), fmt.Sprintf("v0-%d-%s", i, pad))
	}
	waitFor(t, 60*time.Second, "initial keys stored", func() bool { return srv.Stats().Sequence.Load() >= seq0+keys })

	dealer := p.connect(zmq.DEALER, 0, transport.Options{RcvHWM: 100})
	send(t, dealer, []byte(kvmsg.CmdSnapshot), []byte("/c/"))
	got := map[string]string{}
	var end *kvmsg.Msg
	read := func(n int) {
		for ; n > 0 && end == nil; n-- {
			m := recvMsg(t, dealer, 30*time.Second)
			if string(m.Key) == kvmsg.KeySnapshotEnd {
				end = &m
				return
			}
			if _, dup := got[string(m.Key)]; dup {
				t.Fatalf("key %s delivered twice", m.Key)
			}
			got[string(m.Key)] = string(m.Body)
		}
	}
	read(10) // the stream has its view now

	// Overwrite every key 8 times and delete a third of them, reading a
	// little of the stream between batches so that it keeps making progress.
	const rounds = 8
	sent := 0
	for r := 1; r <= rounds; r++ {
		for i := range keys {
			body := fmt.Sprintf("v%d-%d-%s", r, i, pad)
			if r == rounds && i%3 == 0 {
				body = ""
			}
			set(t, push, fmt.Sprintf("/c/%05d", i), body)
			sent++
			if sent%2000 == 0 {
				read(100)
			}
		}
	}
	stored := seq0 + keys + int64(sent)
	waitFor(t, 60*time.Second, "overwrites stored", func() bool { return srv.Stats().Sequence.Load() >= stored })
	read(keys + 1)
	if end == nil {
		t.Fatalf("stream incomplete: %d KVSYNCs", len(got))
	}
	// The view was taken before the first overwrite was sent (10 of its
	// KVSYNCs had arrived), so it is exactly the initial keys.
	if end.Seq != seq0+keys {
		t.Errorf("KTHXBAI sequence %d, want the view's %d", end.Seq, seq0+keys)
	}
	if len(got) != keys {
		t.Fatalf("stream delivered %d keys, view had %d", len(got), keys)
	}
	for i := range keys {
		k := fmt.Sprintf("/c/%05d", i)
		if want := fmt.Sprintf("v0-%d-%s", i, pad); got[k] != want {
			t.Fatalf("%s = %q, want the view's %q", k, got[k], want)
		}
	}
	// And the map itself is the final state.
	fresh, _ := testkit.SnapshotMap(t, p.dealer(), "/c/", 60*time.Second)
	if len(fresh) != keys-(keys+2)/3 {
		t.Fatalf("final map has %d keys, want %d", len(fresh), keys-(keys+2)/3)
	}
	for k, v := range fresh {
		if !strings.HasPrefix(v, fmt.Sprintf("v%d-", rounds)) {
			t.Fatalf("final %s = %q", k, v)
		}
	}
}
