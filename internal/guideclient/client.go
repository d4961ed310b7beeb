package guideclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
)

// Defaults, as in the Guide.
const (
	DefaultEndpoint = "tcp://127.0.0.1"
	DefaultPort     = 5556
	DefaultSubtree  = "/client/"
	DefaultInterval = time.Second
)

// pollMax bounds one poll so that the client notices cancellation promptly.
const pollMax = 100 * time.Millisecond

// Config configures a client run. Zero fields take the defaults above.
type Config struct {
	// Endpoint is the server's address without a port, e.g. "tcp://127.0.0.1".
	Endpoint string
	// Port is the server's base port P.
	Port int
	// Subtree is the key prefix the client follows and writes under. The
	// zero value means DefaultSubtree, as the Guide's client cannot follow
	// the whole map either.
	Subtree string
	// Interval is the time between two random updates.
	Interval time.Duration
	// Rand draws the random keys, bodies and ttls; nil seeds one from the
	// clock, as the Guide's srandom(time(NULL)).
	Rand *rand.Rand
	// SubscribeAll also subscribes the SUB to "" as the published
	// clonecli5.c does (see the package comment).
	SubscribeAll bool
}

// Result is the client's state when it stopped.
type Result struct {
	Map       map[string]string // key → body of every key held
	Sequence  int64             // the last sequence applied (KTHXBAI or update)
	Joined    int64             // the snapshot's (KTHXBAI's) sequence
	Snapshot  int               // KVSYNC messages received in the snapshot
	Sent      int               // KVSETs sent
	Unsent    int               // KVSETs dropped because the PUSH would block
	Received  int               // updates applied
	Discarded int               // updates dropped as out of sequence
	// Gaps counts applied updates whose sequence skipped past Sequence+1.
	// The Guide's client ignores them; they are expected when other subtrees
	// change, and are lost updates when only this subtree is written.
	Gaps      int
	Malformed int // messages that were not valid Clone messages
}

func (c Config) withDefaults() Config {
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Subtree == "" {
		c.Subtree = DefaultSubtree
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	}
	return c
}

// Run joins the server and runs the Guide's client loop until ctx is done,
// then returns the final state. An error means the client could not set up
// its sockets or never completed its snapshot. All sockets are used by the
// calling goroutine only and closed with LINGER 0 before Run returns.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	cfg = cfg.withDefaults()
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("guideclient: new zmq context: %w", err)
	}
	s := &sockets{zctx: zctx}
	defer func() { err = errors.Join(err, s.close()) }()

	// Same order as the Guide: snapshot, subscriber, publisher.
	dealer, err := s.open(zmq.DEALER, endpoint(cfg.Endpoint, cfg.Port))
	if err != nil {
		return nil, err
	}
	var subs []string
	if cfg.SubscribeAll {
		subs = append(subs, "")
	}
	subs = append(subs, cfg.Subtree)
	sub, err := s.open(zmq.SUB, endpoint(cfg.Endpoint, cfg.Port+1), subs...)
	if err != nil {
		return nil, err
	}
	push, err := s.open(zmq.PUSH, endpoint(cfg.Endpoint, cfg.Port+2))
	if err != nil {
		return nil, err
	}

	res = &Result{Map: make(map[string]string)}
	if err := join(ctx, dealer, cfg.Subtree, res); err != nil {
		return nil, err
	}
	if err := follow(ctx, cfg, sub, push, res); err != nil {
		return res, err
	}
	return res, nil
}

// follow is the Guide's main loop: apply newer updates, and send a random
// update every Interval.
func follow(ctx context.Context, cfg Config, sub, push *zmq.Socket, res *Result) error {
	poller := zmq.NewPoller()
	poller.Add(sub, zmq.POLLIN)
	frames := make([][]byte, 0, kvmsg.NumFrames+1)
	alarm := time.Now().Add(cfg.Interval)
	for ctx.Err() == nil {
		wait := min(max(time.Until(alarm), 0), pollMax)
		polled, err := poller.Poll(wait)
		if err != nil {
			return fmt.Errorf("guideclient: poll: %w", err)
		}
		if len(polled) > 0 {
			frames, err = recvFrames(sub, frames)
			if err != nil {
				return fmt.Errorf("guideclient: receive update: %w", err)
			}
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			switch {
			case err != nil:
				res.Malformed++
			case m.Seq > res.Sequence:
				if m.Seq != res.Sequence+1 {
					res.Gaps++
				}
				res.Sequence = m.Seq
				store(res.Map, m)
				res.Received++
			default:
				res.Discarded++ // out of sequence, incl. heartbeats
			}
		}
		if !time.Now().Before(alarm) {
			if err := sendRandom(push, cfg); err == nil {
				res.Sent++
			} else if zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) {
				res.Unsent++
			} else {
				return fmt.Errorf("guideclient: send update: %w", err)
			}
			alarm = time.Now().Add(cfg.Interval)
		}
	}
	return nil
}

// sendRandom sends the Guide's random KVSET.
func sendRandom(push *zmq.Socket, cfg Config) error {
	m := kvmsg.Msg{
		Key:   []byte(cfg.Subtree + strconv.Itoa(cfg.Rand.IntN(10000))),
		Body:  []byte(strconv.Itoa(cfg.Rand.IntN(1000000))),
		Props: kvmsg.SetProp(nil, kvmsg.PropTTL, strconv.Itoa(cfg.Rand.IntN(30))),
	}
	_, err := push.SendMessageDontwait(m.Frames())
	return err
}

// store applies m as kvmsg_store does: an empty body deletes the key.
func store(kv map[string]string, m kvmsg.Msg) {
	if m.IsDelete() {
		delete(kv, string(m.Key))
		return
	}
	kv[string(m.Key)] = string(m.Body)
}

func endpoint(base string, port int) string { return fmt.Sprintf("%s:%d", base, port) }
