package testkit

import (
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// SnapshotMap asks for subtree on dealer (a DEALER connected to a clone
// server's snapshot port) and returns the KVSYNCs as key → body and the
// KTHXBAI sequence. It fails the test if the snapshot is not complete within
// d.
func SnapshotMap(t testing.TB, dealer *zmq.Socket, subtree string, d time.Duration) (map[string]string, int64) {
	t.Helper()
	if err := transport.SendMessage(dealer, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(subtree)}, 0); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	deadline := time.Now().Add(d)
	for {
		frames, err := RecvWithin(dealer, time.Until(deadline))
		if err != nil {
			t.Fatalf("snapshot of %q: no complete answer within %v (%v)", subtree, d, err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			return out, m.Seq
		}
		out[string(m.Key)] = string(m.Body)
	}
}
