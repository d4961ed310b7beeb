package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// stampMagic marks a body that carries a send timestamp: bytes 0-7 are the
// send time (nanoseconds since the rig's epoch, big-endian) and 8-15 this.
// Bodies of timed updates are therefore at least 16 bytes.
const stampMagic = "clnbench"

// minBody is the smallest body a timed update can have.
const minBody = 16

// clock gives monotonic timestamps shared by the goroutines of one rig, so
// that a subscriber can subtract a publisher's send time.
type clock struct{ epoch time.Time }

func newClock() clock              { return clock{epoch: time.Now()} }
func (c clock) now() time.Duration { return time.Since(c.epoch) }
func (c clock) stamp(body []byte) {
	binary.BigEndian.PutUint64(body, uint64(c.now()))
	copy(body[8:], stampMagic)
}
func endpoint(port int) string { return "tcp://127.0.0.1:" + strconv.Itoa(port) }
func isEAGAIN(err error) bool  { return zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) }
func stampOf(body []byte) (int64, bool) {
	if len(body) < minBody || string(body[8:16]) != stampMagic {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(body)), true
}

// newZctx is a client-side ZeroMQ context with room for many sockets and
// two I/O threads, so that the load generators are not the first limit.
func newZctx(maxSockets int) (*zmq.Context, error) {
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("zmq context: %w", err)
	}
	if err := zctx.SetIoThreads(2); err != nil {
		zctx.Term()
		return nil, fmt.Errorf("zmq io threads: %w", err)
	}
	if err := zctx.SetMaxSockets(max(maxSockets, 1023)); err != nil {
		zctx.Term()
		return nil, fmt.Errorf("zmq max sockets: %w", err)
	}
	return zctx, nil
}

// pubSpec describes one publisher's share of a trial.
type pubSpec struct {
	Keys  [][]byte // cycled through
	Body  int      // body size, at least minBody when Timed
	N     int      // messages to send
	Rate  float64  // messages per second; 0 sends as fast as the PUSH takes them
	Timed bool     // stamp each body
	UUID  []byte
	Props []byte
	// Marker, if set, is one more key sent last on the same socket, so
	// that once the server has it, it has everything before it.
	Marker []byte
	// For, if set, stops sending once that long has passed (for unbounded
	// runs, whose N is only a ceiling).
	For time.Duration
}

// pubResult is what one publisher did.
type pubResult struct {
	Sent    int
	Elapsed time.Duration
}

// sendTimeout bounds a blocked PUSH (a server that stopped taking updates).
const sendTimeout = 5 * time.Second

// publish connects a PUSH to the collector at port+2 and sends spec, paced:
// before each burst it sends whatever is due by now, then sleeps until the
// next message is due. It runs on the caller's goroutine, which owns the
// socket.
func publish(ctx context.Context, zctx *zmq.Context, port int, spec pubSpec, clk clock) (pubResult, error) {
	sock, err := transport.Connect(zctx, zmq.PUSH, endpoint(port+2), transport.Options{SndHWM: 10000, Linger: 2 * time.Second}) // what was sent must arrive
	if err != nil {
		return pubResult{}, err
	}
	defer sock.Close()
	if err := sock.SetSndtimeo(sendTimeout); err != nil {
		return pubResult{}, fmt.Errorf("push sndtimeo: %w", err)
	}
	body := make([]byte, max(spec.Body, 1))
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	uuid := spec.UUID
	if uuid == nil {
		uuid = make([]byte, kvmsg.UUIDLen)
	}
	seq := make([]byte, kvmsg.SeqLen)
	frames := [][]byte{nil, seq, uuid, spec.Props, body}
	start := time.Now()
	sent := 0
	for sent < spec.N {
		due := min(spec.N, sent+256)
		if spec.Rate > 0 {
			due = min(spec.N, int(spec.Rate*time.Since(start).Seconds())+1)
		}
		for ; sent < due; sent++ {
			frames[0] = spec.Keys[sent%len(spec.Keys)]
			if spec.Timed {
				clk.stamp(body)
			}
			if err := transport.SendMessage(sock, frames, 0); err != nil {
				return pubResult{sent, time.Since(start)}, fmt.Errorf("push update %d: %w", sent, err)
			}
		}
		if ctx.Err() != nil {
			return pubResult{sent, time.Since(start)}, ctx.Err()
		}
		if spec.For > 0 && time.Since(start) >= spec.For {
			break
		}
		if spec.Rate > 0 && sent < spec.N {
			next := start.Add(time.Duration(float64(sent) / spec.Rate * float64(time.Second)))
			time.Sleep(max(time.Until(next), 50*time.Microsecond))
		}
	}
	if spec.Marker != nil {
		frames[0] = spec.Marker
		if err := transport.SendMessage(sock, frames, 0); err != nil {
			return pubResult{sent, time.Since(start)}, fmt.Errorf("push marker %q: %w", spec.Marker, err)
		}
	}
	return pubResult{sent, time.Since(start)}, nil
}

// publishAll runs one publish per spec concurrently and returns the total
// sent and the longest elapsed time.
func publishAll(ctx context.Context, zctx *zmq.Context, port int, specs []pubSpec, clk clock) (int, time.Duration, error) {
	res := make([]pubResult, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() { res[i], errs[i] = publish(ctx, zctx, port, s, clk) })
	}
	wg.Wait()
	total, longest := 0, time.Duration(0)
	for _, r := range res {
		total += r.Sent
		longest = max(longest, r.Elapsed)
	}
	return total, longest, errors.Join(errs...)
}

// subCounters are a subscriber's running totals, read by the rig while the
// subscriber goroutine updates them.
type subCounters struct {
	received atomic.Int64 // updates (not HUGZ) received
	lost     atomic.Int64 // sequence numbers skipped
	disorder atomic.Int64 // sequences not greater than the previous one
}

// subscriber follows the PUB at port+1 on its own goroutine (it owns the
// SUB socket), checks that sequences are contiguous and records the latency
// of timestamped bodies. take swaps its histogram out.
type subscriber struct {
	subCounters
	take chan chan *Hist
	done chan struct{}
	// onMsg, if set, sees every update on the subscriber's goroutine.
	onMsg func(key, body []byte, seq int64, now time.Duration)
}

// startSubscriber connects a SUB (RCVHWM 100000, so that the client's queue
// is not what loses) subscribed to prefixes and starts its goroutine, which
// stops when ctx is done.
func startSubscriber(ctx context.Context, zctx *zmq.Context, port int, clk clock, prefixes []string,
	onMsg func(key, body []byte, seq int64, now time.Duration)) (*subscriber, error) {
	sock, err := transport.Connect(zctx, zmq.SUB, endpoint(port+1), transport.Options{RcvHWM: 100000, Subscribe: prefixes})
	if err != nil {
		return nil, err
	}
	s := &subscriber{take: make(chan chan *Hist), done: make(chan struct{}), onMsg: onMsg}
	go s.run(ctx, sock, clk)
	return s, nil
}

func (s *subscriber) run(ctx context.Context, sock *zmq.Socket, clk clock) {
	defer close(s.done)
	defer sock.Close()
	hist := NewHist()
	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	rx := transport.NewReceiver(sock)
	var last int64
	for ctx.Err() == nil {
		select {
		case reply := <-s.take:
			reply <- hist
			hist = NewHist()
		default:
		}
		if n, err := poller.Poll(20 * time.Millisecond); err != nil || len(n) == 0 {
			continue
		}
		for range 4096 {
			frames, _, err := rx.Recv(zmq.DONTWAIT)
			if err != nil {
				break
			}
			if len(frames) != kvmsg.NumFrames || len(frames[kvmsg.FrameSeq]) != kvmsg.SeqLen {
				continue
			}
			seq := int64(binary.BigEndian.Uint64(frames[kvmsg.FrameSeq]))
			if seq == 0 && string(frames[kvmsg.FrameKey]) == kvmsg.KeyHeartbeat {
				continue
			}
			now := clk.now()
			switch {
			case last == 0 || seq == last+1:
			case seq > last+1:
				s.lost.Add(seq - last - 1)
			default:
				s.disorder.Add(1)
			}
			last = seq
			if ts, ok := stampOf(frames[kvmsg.FrameBody]); ok {
				hist.Record(now - time.Duration(ts))
			}
			if s.onMsg != nil {
				s.onMsg(frames[kvmsg.FrameKey], frames[kvmsg.FrameBody], seq, now)
			}
			s.received.Add(1)
		}
	}
}

// takeHist returns the latency histogram recorded since the last call.
func (s *subscriber) takeHist() *Hist {
	reply := make(chan *Hist, 1)
	select {
	case s.take <- reply:
		return <-reply
	case <-s.done:
		return NewHist()
	}
}

// joinResult is one snapshot as a joiner saw it.
type joinResult struct {
	Syncs    int           // KVSYNCs received
	First    time.Duration // request to first KVSYNC
	Done     time.Duration // request to KTHXBAI
	Complete bool          // KTHXBAI arrived
	Seq      int64         // KTHXBAI's sequence
	Map      map[string]string
}

// fetchSnapshot asks for subtree on a fresh DEALER (default options but
// LINGER 0) at port and receives until KTHXBAI, or until nothing has
// arrived for firstWait before the first message or idle after it (a server
// that dropped the KTHXBAI). keep stores the map. It runs on the caller's
// goroutine, which owns the socket.
func fetchSnapshot(zctx *zmq.Context, port int, subtree string, firstWait, idle time.Duration, keep bool) (joinResult, error) {
	var r joinResult
	sock, err := transport.Connect(zctx, zmq.DEALER, endpoint(port), transport.Options{})
	if err != nil {
		return r, err
	}
	defer sock.Close()
	if keep {
		r.Map = map[string]string{}
	}
	start := time.Now()
	if err := transport.SendMessage(sock, [][]byte{[]byte(kvmsg.CmdSnapshot), []byte(subtree)}, 0); err != nil {
		return r, fmt.Errorf("send ICANHAZ? %q: %w", subtree, err)
	}
	poller := zmq.NewPoller()
	poller.Add(sock, zmq.POLLIN)
	rx := transport.NewReceiver(sock) // one cgo call per message, as the client package does
	for {
		wait := idle
		if r.Syncs == 0 {
			wait = firstWait
		}
		polled, err := poller.Poll(wait)
		if err != nil {
			return r, fmt.Errorf("poll snapshot: %w", err)
		}
		if len(polled) == 0 {
			r.Done = time.Since(start)
			return r, nil // incomplete
		}
		for range 4096 {
			frames, _, err := rx.Recv(zmq.DONTWAIT)
			if isEAGAIN(err) {
				break
			}
			if err != nil {
				return r, fmt.Errorf("receive snapshot: %w", err)
			}
			if len(frames) != kvmsg.NumFrames {
				continue
			}
			key := frames[kvmsg.FrameKey]
			if string(key) == kvmsg.KeySnapshotEnd {
				r.Done, r.Complete = time.Since(start), true
				if len(frames[kvmsg.FrameSeq]) == kvmsg.SeqLen {
					r.Seq = int64(binary.BigEndian.Uint64(frames[kvmsg.FrameSeq]))
				}
				return r, nil
			}
			if r.Syncs == 0 {
				r.First = time.Since(start)
			}
			r.Syncs++
			if keep {
				r.Map[string(key)] = string(frames[kvmsg.FrameBody])
			}
		}
	}
}
