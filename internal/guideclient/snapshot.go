package guideclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
)

// Snapshot joins the server at endpoint:port just as Run does — ICANHAZ? +
// subtree on a DEALER, KVSYNCs until KTHXBAI — and returns the map and the
// snapshot's sequence. It fails if the snapshot is not complete within
// timeout or before ctx is done.
func Snapshot(ctx context.Context, endpoint string, port int, subtree string, timeout time.Duration) (kv map[string]string, seq int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, 0, fmt.Errorf("guideclient: new zmq context: %w", err)
	}
	s := &sockets{zctx: zctx}
	defer func() { err = errors.Join(err, s.close()) }()
	dealer, err := s.open(zmq.DEALER, fmt.Sprintf("%s:%d", endpoint, port))
	if err != nil {
		return nil, 0, err
	}
	res := &Result{Map: make(map[string]string)}
	if err := join(ctx, dealer, subtree, res); err != nil {
		return nil, 0, err
	}
	return res.Map, res.Sequence, nil
}

// join sends ICANHAZ? + subtree and stores the KVSYNCs into res until
// KTHXBAI, whose sequence becomes res.Sequence.
func join(ctx context.Context, dealer *zmq.Socket, subtree string, res *Result) error {
	if _, err := dealer.SendMessage(kvmsg.CmdSnapshot, subtree); err != nil {
		return fmt.Errorf("guideclient: send %s %q: %w", kvmsg.CmdSnapshot, subtree, err)
	}
	poller := zmq.NewPoller()
	poller.Add(dealer, zmq.POLLIN)
	frames := make([][]byte, 0, kvmsg.NumFrames+1)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("guideclient: snapshot %q: %w", subtree, err)
		}
		polled, err := poller.Poll(pollMax)
		if err != nil {
			return fmt.Errorf("guideclient: poll: %w", err)
		}
		if len(polled) == 0 {
			continue
		}
		frames, err = recvFrames(dealer, frames)
		if err != nil {
			return fmt.Errorf("guideclient: receive snapshot: %w", err)
		}
		m, err := kvmsg.Decode(frames, kvmsg.Limits{})
		if err != nil {
			res.Malformed++
			continue
		}
		if string(m.Key) == kvmsg.KeySnapshotEnd {
			res.Sequence, res.Joined = m.Seq, m.Seq
			return nil
		}
		store(res.Map, m)
		res.Snapshot++
	}
}
