//go:build soak

package reliability

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// TestJoinHerd is the server half of issue 11's behaviour 3: HERD_CLIENTS
// (default 300) raw DEALERs ask at once for the whole of a HERD_KEYS-key map
// (default 100,000) and read as fast as they can, with no join timeout of
// their own. Every one must get every key and the KTHXBAI, none refused or
// aborted; the test logs how long the herd took. Run it with
//
//	go test -tags soak -count=1 -run '^TestJoinHerd$' -v ./reliability/
func TestJoinHerd(t *testing.T) {
	clients, keys := envInt(t, "HERD_CLIENTS", 300), envInt(t, "HERD_KEYS", 100000)
	srv := startServer(t, server.Config{MaxStreams: envInt(t, "HERD_MAX_STREAMS", server.DefaultMaxStreams)})
	zctx := newContext(t, 4*clients)
	if err := zctx.SetIoThreads(2); err != nil {
		t.Fatal(err)
	}
	push := connect(t, zctx, zmq.PUSH, srv.Port(), 2, transport.Options{SndHWM: 100000})
	defer push.Close()
	fillMap(t, srv, push, keys, "v", int64(keys))

	type result struct {
		n          int
		took       time.Duration
		first, gap time.Duration // wait for the first message; longest wait between two
		err        error
	}
	results := make([]result, clients)
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(clients)
	for i := range clients {
		wg.Go(func() {
			d, err := transport.Connect(zctx, zmq.DEALER, endpoint(srv.Port(), 0), transport.Options{})
			if err != nil {
				ready.Done()
				results[i].err = err
				return
			}
			defer d.Close()
			ready.Done()
			<-start
			began := time.Now()
			if err := transport.SendMessage(d, [][]byte{[]byte(kvmsg.CmdSnapshot), nil}, 0); err != nil {
				results[i].err = err
				return
			}
			if err := d.SetRcvtimeo(60 * time.Second); err != nil {
				results[i].err = err
				return
			}
			rx := transport.NewReceiver(d)
			last := began
			for {
				frames, _, err := rx.Recv(0)
				now := time.Now()
				if results[i].n == 0 {
					results[i].first = now.Sub(began)
				} else {
					results[i].gap = max(results[i].gap, now.Sub(last))
				}
				last = now
				if err != nil {
					results[i].err = fmt.Errorf("after %d messages: %w", results[i].n, err)
					return
				}
				if string(frames[0]) == kvmsg.KeySnapshotEnd {
					m, err := kvmsg.Decode(frames, kvmsg.Limits{})
					if r, ok := m.Prop(kvmsg.PropRefused); err != nil || ok {
						results[i].err = fmt.Errorf("KTHXBAI refused=%q (%v) after %d messages", r, err, results[i].n)
					}
					results[i].took = time.Since(began)
					return
				}
				results[i].n++
			}
		})
	}
	ready.Wait()
	began := time.Now()
	close(start)
	wg.Wait()
	total := time.Since(began)

	var took, first, gap []time.Duration
	for i, r := range results {
		first, gap = append(first, r.first), append(gap, r.gap)
		if r.err != nil {
			t.Errorf("client %d: %v", i, r.err)
			continue
		}
		if r.n != keys {
			t.Errorf("client %d: %d KVSYNCs, want %d", i, r.n, keys)
		}
		took = append(took, r.took)
	}
	slices.Sort(took)
	slices.Sort(first)
	slices.Sort(gap)
	st := srv.Stats()
	if len(took) > 0 {
		t.Logf("herd: %d clients × %d keys, %d streams at once, in %v (per client p50 %v, max %v; first message p50 %v, max %v; longest silence p50 %v, max %v); served %d, aborted %d, refused busy %d, too_many %d",
			clients, keys, envInt(t, "HERD_MAX_STREAMS", server.DefaultMaxStreams), total.Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
			first[len(first)/2].Round(time.Millisecond), first[len(first)-1].Round(time.Millisecond), gap[len(gap)/2].Round(time.Millisecond), gap[len(gap)-1].Round(time.Millisecond),
			st.SnapshotsServed.Load(), st.SnapshotsAborted.Load(), st.SnapshotRefusals.Get("busy"), st.SnapshotRefusals.Get("too_many_requests"))
	}
}
