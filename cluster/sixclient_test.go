package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// sixClient is the Guide's Model Six client (clone.c's agent, as used by
// clonecli6.c) rendered for this test, on real sockets and one goroutine:
//
//   - one publisher connected to every server's collector (P+2): each
//     update, with a fresh UUID, goes to every server, and is stored in the
//     client's own map at once (kvmsg_store);
//   - a snapshot DEALER (P) and a subscriber SUB (P+1) per server, only the
//     current server's polled: ICANHAZ? + subtree, KVSYNCs stored until
//     KTHXBAI (its sequence becomes the client's), then every KVPUB above
//     the client's sequence applied and anything else, HUGZ included,
//     dropped;
//   - anything at all from the current server (HUGZ included) keeps it
//     alive; after ttl of silence the client moves to the next server and
//     joins it again (its map is kept and the new snapshot stored over it,
//     as clone.c does).
//
// The one change from clone.c: its publisher is an XPUB with verbose
// subscriptions (the same wire as a PUB) so that the test knows when both
// servers' collectors have subscribed before it sends what it counts.
type sixClient struct {
	ports   []int // the servers' base ports
	subtree string
	ttl     time.Duration
	rate    int // updates per second
	max     int // updates to send (then it only follows)
	keys    int

	// Results, read after run returns.
	kv        map[string]string
	seq       int64
	sent      [][]byte // the UUIDs sent, in order
	failovers int
	joins     int
	applied   int
	dropped   int
	server    int // index of the current server
	subs      int // collector subscriptions seen
}

// sixKey and sixBody are the Model Six client's update i.
func (c *sixClient) sixKey(i int) string { return fmt.Sprintf("%s%04d", c.subtree, i%c.keys) }
func sixBody(i int) string               { return fmt.Sprintf("six-%d", i) }

func sixUUID(i int) []byte {
	u := writerUUID(1000, i) // writer 1000: apart from the writers'
	return u
}

// run joins, follows and sends until ctx is done. state, if set, is called
// after every step with the client's figures (from this goroutine).
func (c *sixClient) run(ctx context.Context, zctx *zmq.Context, state func(c *sixClient)) (err error) {
	var socks []*zmq.Socket
	defer func() {
		for _, s := range socks {
			err = errors.Join(err, s.Close())
		}
	}()
	open := func(typ zmq.Type, port int, opts transport.Options) (*zmq.Socket, error) {
		s, err := transport.Connect(zctx, typ, fmt.Sprintf("tcp://127.0.0.1:%d", port), opts)
		if err == nil {
			socks = append(socks, s)
		}
		return s, err
	}
	pub, err := transport.NewSocket(zctx, zmq.XPUB, transport.Options{})
	if err != nil {
		return err
	}
	socks = append(socks, pub)
	if err := pub.SetXpubVerbose(1); err != nil {
		return err
	}
	var dealers, subs []*zmq.Socket
	for _, p := range c.ports {
		if err := pub.Connect(fmt.Sprintf("tcp://127.0.0.1:%d", p+2)); err != nil {
			return err
		}
		// The Guide subscribes to the subtree and to HUGZ.
		sub, err := open(zmq.SUB, p+1, transport.Options{Subscribe: []string{c.subtree, kvmsg.KeyHeartbeat}, RcvHWM: 100_000})
		if err != nil {
			return err
		}
		d, err := open(zmq.DEALER, p, transport.Options{})
		if err != nil {
			return err
		}
		subs, dealers = append(subs, sub), append(dealers, d)
	}
	c.kv = map[string]string{}
	const (
		initial = iota
		syncing
		active
	)
	st := initial
	expiry := time.Now().Add(c.ttl)
	start := time.Time{}
	for ctx.Err() == nil {
		if st == initial {
			if _, err := dealers[c.server].SendMessage(kvmsg.CmdSnapshot, c.subtree); err != nil {
				return fmt.Errorf("ICANHAZ to server %d: %w", c.server, err)
			}
			st, expiry = syncing, time.Now().Add(c.ttl)
		}
		poller := zmq.NewPoller()
		poller.Add(pub, zmq.POLLIN)
		if st == syncing {
			poller.Add(dealers[c.server], zmq.POLLIN)
		} else {
			poller.Add(subs[c.server], zmq.POLLIN)
		}
		polled, err := poller.Poll(10 * time.Millisecond)
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		for _, p := range polled {
			frames, err := p.Socket.RecvMessageBytes(0)
			if err != nil {
				return err
			}
			if p.Socket == pub { // a collector's (un)subscription
				if len(frames) == 1 && len(frames[0]) >= 1 && frames[0][0] == 1 {
					c.subs++
				}
				continue
			}
			expiry = time.Now().Add(c.ttl)
			m, err := kvmsg.Decode(frames, kvmsg.Limits{})
			if err != nil {
				return fmt.Errorf("server %d sent a malformed message: %w", c.server, err)
			}
			switch {
			case st == syncing && string(m.Key) == kvmsg.KeySnapshotEnd:
				c.seq, st = m.Seq, active
				c.joins++
			case st == syncing:
				store(c.kv, m)
			case m.Seq > c.seq:
				c.seq = m.Seq
				store(c.kv, m)
				c.applied++
			default:
				c.dropped++ // HUGZ, or an update older than the client's sequence
			}
		}
		if time.Now().After(expiry) {
			// Silence: the server is taken for dead, the next one joined.
			// Its DEALER may hold an answer to an ICANHAZ? still queued for
			// the dead one: clone.c leaves it, and so does this.
			c.server = (c.server + 1) % len(c.ports)
			c.failovers++
			st = initial
		}
		if c.subs >= len(c.ports) && len(c.sent) < c.max {
			if start.IsZero() {
				start = time.Now()
			}
			for due := int(time.Since(start).Seconds() * float64(c.rate)); len(c.sent) < min(due, c.max); {
				i := len(c.sent)
				m := kvmsg.Msg{Key: []byte(c.sixKey(i)), UUID: sixUUID(i), Body: []byte(sixBody(i))}
				if _, err := pub.SendMessage(m.Frames()); err != nil {
					return fmt.Errorf("send update %d: %w", i, err)
				}
				store(c.kv, m)
				c.sent = append(c.sent, m.UUID)
			}
		}
		if state != nil {
			state(c)
		}
	}
	return nil
}

// store is kvmsg_store: an empty body deletes.
func store(kv map[string]string, m kvmsg.Msg) {
	if m.IsDelete() {
		delete(kv, string(m.Key))
		return
	}
	kv[string(m.Key)] = string(m.Body)
}
