package adapter_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/transport"
	"github.com/clonekv/clonekv/transport/adapter"
)

// TestReaderBatchBytes: a batch ends at BatchBytes (taking at least one
// message), so that credits bound bytes in flight as well as batches.
func TestReaderBatchBytes(t *testing.T) {
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	pull, err := transport.Bind(zctx, zmq.PULL, "tcp://127.0.0.1:*", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep, _ := pull.GetLastEndpoint()
	push, err := transport.Connect(zctx, zmq.PUSH, ep, transport.Options{Linger: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer push.Close()

	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer sys.Shutdown()
	batches := make(chan *adapter.Inbound, 100)
	target := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if in, ok := c.Message().(*adapter.Inbound); ok {
			batches <- in
		}
	}))
	// One credit: the reader reads the next batch only once this one is
	// done, so every message is queued at the socket when it does.
	r := sys.Root.Spawn(adapter.NewReader(adapter.ReaderConfig{Socket: pull, Target: target, Credits: adapter.NewCredits(1),
		BatchMax: 64, BatchBytes: 250 << 10}).Props())
	defer func() { _ = sys.Root.StopFuture(r).Wait() }()

	const n, size = 20, 100 << 10
	body := make([]byte, size)
	for i := 0; i < n; i++ {
		if err := transport.SendMessage(push, [][]byte{[]byte("k"), body}, 0); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for got < n {
		select {
		case in := <-batches:
			if len(in.Msgs) > 3 {
				t.Errorf("a batch of %d messages of %d bytes, BatchBytes %d (want at most 3)", len(in.Msgs), size, 250<<10)
			}
			got += len(in.Msgs)
			in.Done()
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d messages read", got, n)
		}
	}
}
