package guideclient_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// TestServerAcceptsNewlineProps is issue 10's behaviour 3: clonekv's server
// accepts a KVSET whose properties frame is the single "\n" the Go port's
// kvmsg sends when there are none (and one with its trailing empty line
// after a ttl), publishes both and stores them.
func TestServerAcceptsNewlineProps(t *testing.T) {
	t.Parallel()
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, srv, 5*time.Second)
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	sub, err := transport.Connect(zctx, zmq.SUB, fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port()+1), transport.Options{Subscribe: []string{"/nl/"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	push, err := transport.Connect(zctx, zmq.PUSH, fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port()+2), transport.Options{Linger: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer push.Close()

	sent := []kvmsg.Msg{
		{Key: []byte("/nl/a"), Props: []byte("\n"), Body: []byte("1")},
		{Key: []byte("/nl/b"), Props: []byte("ttl=60\n\n"), Body: []byte("2")},
	}
	// The SUB's subscription may not have reached the server yet: send
	// until the first publication arrives.
	deadline := time.Now().Add(10 * time.Second)
	var got []kvmsg.Msg
	for len(got) < len(sent) && time.Now().Before(deadline) {
		if len(got) == 0 {
			for _, m := range sent {
				if err := transport.SendMessage(push, m.Frames(), 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		frames, err := testkit.RecvWithin(sub, 200*time.Millisecond)
		if err != nil {
			continue
		}
		m, err := kvmsg.Decode(frames, kvmsg.DefaultLimits)
		if err != nil {
			t.Fatalf("published a message that does not decode: %v", err)
		}
		if len(got) == 0 && string(m.Key) != "/nl/a" {
			continue // a later round's copy
		}
		got = append(got, kvmsg.Msg{Key: append([]byte(nil), m.Key...), Seq: m.Seq, Props: append([]byte(nil), m.Props...), Body: append([]byte(nil), m.Body...)})
	}
	if len(got) != 2 || string(got[0].Key) != "/nl/a" || string(got[1].Key) != "/nl/b" || got[1].Seq != got[0].Seq+1 {
		t.Fatalf("published %+v, want /nl/a then /nl/b", got)
	}
	if st := srv.Stats(); st.RejectedTotal("") != 0 {
		t.Fatalf("server rejected %d messages", st.RejectedTotal(""))
	}
	d, err := transport.Connect(zctx, zmq.DEALER, fmt.Sprintf("tcp://127.0.0.1:%d", srv.Port()), transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	kv, _ := testkit.SnapshotMap(t, d, "/nl/", 10*time.Second)
	if kv["/nl/a"] != "1" || kv["/nl/b"] != "2" {
		t.Fatalf("snapshot %v, want both keys stored", kv)
	}
}
