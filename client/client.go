package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// Client follows a clone server's map under a subtree and writes to it. It
// is safe for concurrent use. Create it with New or Dial; Close it.
type Client struct {
	opts Options
	eps  []endpoint
	log  *slog.Logger

	// mu guards the map and sync state. The owner goroutine is the only
	// writer and holds the write lock only while applying one batch;
	// readers hold the read lock for one lookup, or just long enough to take
	// an O(1) copy-on-write View that they then walk without any lock.
	mu       sync.RWMutex
	m        *kvmap.Map
	seq      int64
	synced   bool
	syncedCh chan struct{} // closed while synced; replaced when a re-join starts
	server   string
	lastErr  string
	history  string // the history id of the map m

	cnt   counters
	drops drops
	rs    rejoinStats

	zctx   *zmq.Context
	reqs   chan any      // API goroutines → owner
	wakeCh chan struct{} // API goroutines → waker (coalescing, capacity 1)
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the owner has finished
	wdone  chan struct{} // closed when the waker has finished
	closed sync.Once
}

type counters struct {
	joins, resyncs, gaps, restarts, disconnects, timeouts, switches atomic.Int64
	heartbeats, updates, malformed, eventsLost, sent, refused       atomic.Int64
	resets                                                          atomic.Int64
}

// Stats are the client's counters and state.
type Stats struct {
	Server      string           // the endpoint followed (or being joined)
	Synced      bool             // the map matches the server (no re-join in progress)
	Seq         int64            // the last sequence applied
	Keys        int              // keys held
	Joins       int64            // snapshots completed
	Resyncs     int64            // times the client stopped trusting its map
	Gaps        int64            // ...because updates were lost
	Restarts    int64            // ...because the sequence went backwards
	Disconnects int64            // ...because the connection to the server dropped
	Timeouts    int64            // endpoints given up for silence or no answer
	Switches    int64            // moves to a different endpoint
	Heartbeats  int64            // HUGZ received
	Updates     int64            // updates applied (in the subtree)
	Malformed   int64            // messages from the server not taken: not valid Clone messages, or over a decode limit
	Drops       map[string]int64 // Malformed by reason (kvmsg's reasons: frame_count, properties, key_too_long, ...)
	Refused     int64            // snapshot requests the server refused (KTHXBAI with refused=...), each retried after a backoff
	Resets      int64            // re-joins that found another history (EventReset)
	Resumes     int64            // re-joins that received only the updates missed (EventResumed)
	FullResyncs int64            // re-joins that received a whole snapshot (EventFull or EventReset)
	FullReasons map[string]int64 // FullResyncs by reason (see EventFull)
	// RejoinMessages and RejoinBytes total the replies of the re-joins
	// (every message and byte received on the snapshot socket, KTHXBAI
	// included; not the first join, unless it asked to resume).
	RejoinMessages, RejoinBytes int64
	LastJoin                    JoinStats // the last join completed
	History                     string    // the history id of the map held ("" when the server gives none)
	EventsLost                  int64     // events dropped because a watcher did not keep up
	Sent                        int64     // updates handed to ZeroMQ for the server
	LastError                   string    // the last reason the client had to re-join or move on
}

// New starts a client in the background: it connects to the first endpoint
// and joins. Use WaitSynced, or Dial, to wait for the first snapshot.
func New(opts Options) (*Client, error) {
	c, _, err := start(opts, false, context.Background())
	return c, err
}

// NewWatching is New with a watcher registered before the client starts,
// so that its first event is the first join's EventResyncDone (Watch called
// after New may miss it when the join completes first). The channel is
// closed when ctx is done or the client closes.
func NewWatching(ctx context.Context, opts Options) (*Client, <-chan Event, error) {
	return start(opts, true, ctx)
}

// start starts a client, with a watcher from the start if watch is set.
func start(opts Options, watch bool, watchCtx context.Context) (*Client, <-chan Event, error) {
	o, eps, err := opts.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	c := &Client{
		opts: o, eps: eps, log: o.Logger.With("component", "clonekv-client"),
		m: kvmap.New(), syncedCh: make(chan struct{}),
		reqs: make(chan any, 256), wakeCh: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), wdone: make(chan struct{}),
	}
	if c.zctx, err = zmq.NewContext(); err != nil {
		return nil, nil, fmt.Errorf("clonekv client: zmq context: %w", err)
	}
	const wakeAddr = "inproc://clonekv-client-wake"
	wakeRx, err := transport.Bind(c.zctx, zmq.PULL, wakeAddr, transport.Options{})
	if err != nil {
		c.zctx.Term()
		return nil, nil, fmt.Errorf("clonekv client: wake pipe: %w", err)
	}
	o2 := newOwner(c, wakeRx)
	var events <-chan Event
	if watch {
		// Registered before the owner runs: nothing can happen before it.
		w := &watcher{ch: make(chan Event, c.opts.EventBuffer)}
		o2.watchers[w] = struct{}{}
		c.unwatchOnDone(watchCtx, w)
		events = w.ch
	}
	go c.runWaker(wakeAddr)
	go o2.run()
	return c, events, nil
}

// unwatchOnDone removes w when ctx is done (or forgets it when the client
// closes first).
func (c *Client) unwatchOnDone(ctx context.Context, w *watcher) {
	go func() {
		select {
		case <-ctx.Done():
			_ = c.submit(&unwatchReq{w: w})
		case <-c.done:
		}
	}()
}

// Dial starts a client and waits until it holds the first snapshot. If no
// endpoint delivers one before ctx is done, the client is closed and the
// error says what went wrong last.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	c, err := New(opts)
	if err != nil {
		return nil, err
	}
	if err := c.WaitSynced(ctx); err != nil {
		last := c.Stats().LastError
		c.Close()
		if last != "" {
			return nil, fmt.Errorf("clonekv client: no snapshot from %s: %w (last problem: %s)", joinNames(c.eps), err, last)
		}
		return nil, fmt.Errorf("clonekv client: no snapshot from %s: %w", joinNames(c.eps), err)
	}
	return c, nil
}

func joinNames(eps []endpoint) string {
	var b bytes.Buffer
	for i, e := range eps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.name)
	}
	return b.String()
}

// runWaker owns the sending end of the owner's inproc wake pipe: API
// goroutines signal wakeCh (never touching a socket), and this goroutine
// turns each signal into one byte the owner's poll sees.
func (c *Client) runWaker(addr string) {
	defer close(c.wdone)
	tx, err := transport.Connect(c.zctx, zmq.PUSH, addr, transport.Options{})
	if err != nil {
		c.log.Error("wake pipe failed; the client reacts to requests only on its 250ms tick", "err", err)
		<-c.stop
		return
	}
	defer tx.Close()
	for {
		select {
		case <-c.wakeCh:
		case <-c.stop:
			_, _ = tx.SendBytes([]byte{1}, zmq.DONTWAIT) // wake the owner so it sees stop
			return
		}
		if _, err := tx.SendBytes([]byte{1}, zmq.DONTWAIT); err != nil && !transport.IsAgain(err) {
			c.log.Warn("wake pipe send failed", "err", err)
		}
	}
}

// Close stops the client: it closes the sockets (queued updates get
// Options.Linger to reach the server) and every Watch channel. It is safe
// to call more than once.
func (c *Client) Close() error {
	c.closed.Do(func() { close(c.stop) })
	<-c.done
	return nil
}

// submit hands r to the owner. Replies are awaited together with c.done, so
// a request the owner never took cannot hang its caller.
func (c *Client) submit(r any) error {
	select {
	case <-c.stop:
		return ErrClosed
	default:
	}
	select {
	case c.reqs <- r:
	case <-c.done:
		return ErrClosed
	}
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
	return nil
}

// WaitSynced waits until the client's map matches the server (the first
// snapshot, or the end of a re-join), or ctx is done.
func (c *Client) WaitSynced(ctx context.Context) error {
	c.mu.RLock()
	ch := c.syncedCh
	c.mu.RUnlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// Get returns a copy of the value stored under key, if the key is held.
// During a re-join it answers from the last consistent map.
func (c *Client) Get(key string) ([]byte, bool) {
	if len(key) > c.opts.MaxKey {
		return nil, false // never stored; and never looked up (see Options.MaxKey)
	}
	c.mu.RLock()
	e, ok := c.m.Get([]byte(key))
	c.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return bytes.Clone(e.Body()), true
}

// Seq returns the sequence number of the last update applied.
func (c *Client) Seq() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.seq
}

// Synced reports whether the map is the server's complete state at Seq:
// false while a join, re-join or resume is in progress, and from the moment
// a gap is detected.
func (c *Client) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// Snapshot returns an immutable copy of the map in O(1) (copy-on-write),
// with the sequence it is at. Walking it takes no lock and never delays the
// client.
func (c *Client) Snapshot() *Snapshot {
	c.mu.Lock() // View writes the tree's copy-on-write id
	defer c.mu.Unlock()
	return &Snapshot{Seq: c.seq, Synced: c.synced, view: c.m.View(), maxKey: c.opts.MaxKey}
}

// Snapshot is an immutable copy of the client's map.
type Snapshot struct {
	Seq    int64 // the last sequence applied
	Synced bool  // false when taken during a re-join (it may be stale)
	view   *kvmap.View
	maxKey int // keys longer than this are never held
}

// Len returns the number of keys.
func (s *Snapshot) Len() int { return s.view.Len() }

// Get returns the value under key. The slice is shared: do not modify it.
func (s *Snapshot) Get(key string) ([]byte, bool) {
	if len(key) > s.maxKey {
		return nil, false
	}
	e, ok := s.view.Get([]byte(key))
	if !ok {
		return nil, false
	}
	return e.Body(), true
}

// Range calls fn for every key (under prefix) in key order until fn returns
// false. Value slices are shared: do not modify them.
func (s *Snapshot) Range(prefix string, fn func(key string, value []byte, seq int64) bool) {
	if len(prefix) > s.maxKey {
		return // no key held is that long
	}
	s.view.Ascend([]byte(prefix), func(e kvmap.Entry) bool {
		return fn(string(e.Key()), e.Body(), e.Seq())
	})
}

// Map returns the snapshot as a plain map of key → value.
func (s *Snapshot) Map() map[string]string {
	out := make(map[string]string, s.Len())
	s.Range("", func(k string, v []byte, _ int64) bool { out[k] = string(v); return true })
	return out
}

// Stats returns the client's counters and state.
func (c *Client) Stats() Stats {
	c.mu.RLock()
	st := Stats{Server: c.server, Synced: c.synced, Seq: c.seq, Keys: c.m.Len(), LastError: c.lastErr, History: c.history}
	c.mu.RUnlock()
	st.Drops = c.drops.snapshot()
	c.rs.fill(&st)
	st.Refused, st.Resets = c.cnt.refused.Load(), c.cnt.resets.Load()
	n := &c.cnt
	st.Joins, st.Resyncs, st.Gaps, st.Restarts = n.joins.Load(), n.resyncs.Load(), n.gaps.Load(), n.restarts.Load()
	st.Disconnects, st.Timeouts, st.Switches = n.disconnects.Load(), n.timeouts.Load(), n.switches.Load()
	st.Heartbeats, st.Updates, st.Malformed = n.heartbeats.Load(), n.updates.Load(), n.malformed.Load()
	st.EventsLost, st.Sent = n.eventsLost.Load(), n.sent.Load()
	return st
}

// Watch returns a channel of events (updates, deletes, re-joins, server
// switches) from now on, closed when ctx is done or the client closes. The
// client never waits for a watcher: a channel that is full loses events and
// then receives an EventLost with their number (see Options.EventBuffer).
// To combine with a Snapshot, call Watch first and skip events whose Seq is
// not above the snapshot's.
func (c *Client) Watch(ctx context.Context) <-chan Event {
	w := &watcher{ch: make(chan Event, c.opts.EventBuffer)}
	ack := make(chan struct{}, 1)
	if err := c.submit(&watchReq{w: w, ack: ack}); err != nil {
		w.close()
		return w.ch
	}
	select {
	case <-ack:
	case <-c.done:
		w.close()
		return w.ch
	}
	c.unwatchOnDone(ctx, w)
	return w.ch
}

// Resync makes the client drop its trust in its map and fetch a whole
// fresh snapshot (never a resume: the application distrusts the map
// itself; watchers get EventFull with reason "requested" and the
// differences).
func (c *Client) Resync() error { return c.submit(resyncReq{}) }

// Set asks the server to store value under key, expiring after ttl (0: never;
// rounded up to whole seconds). It returns once the update is queued for the
// server; the map changes when the server publishes it. Use SetWait to wait
// for that.
func (c *Client) Set(key string, value []byte, ttl time.Duration) error {
	m, err := newUpdate(key, value, ttl, false)
	if err != nil {
		return err
	}
	return c.send(m, nil)
}

// Delete asks the server to delete key.
func (c *Client) Delete(key string) error {
	m, err := newUpdate(key, nil, 0, true)
	if err != nil {
		return err
	}
	return c.send(m, nil)
}

// SetWait is Set, then waits until the server has published the update and
// the client applied it; it returns its sequence. With FilterServer the key
// must be under the subtree (the echo is not received otherwise).
func (c *Client) SetWait(ctx context.Context, key string, value []byte, ttl time.Duration) (int64, error) {
	m, err := newUpdate(key, value, ttl, false)
	if err != nil {
		return 0, err
	}
	return c.sendWait(ctx, m)
}

// DeleteWait is Delete, then waits as SetWait does.
func (c *Client) DeleteWait(ctx context.Context, key string) (int64, error) {
	m, err := newUpdate(key, nil, 0, true)
	if err != nil {
		return 0, err
	}
	return c.sendWait(ctx, m)
}

func (c *Client) sendWait(ctx context.Context, m kvmsg.Msg) (int64, error) {
	if c.opts.Filter == FilterServer && !bytes.HasPrefix(m.Key, []byte(c.opts.Subtree)) {
		return 0, ErrOutsideSubtree
	}
	w := &waiter{uuid: [16]byte(m.UUID), ch: make(chan int64, 1)}
	if err := c.send(m, w); err != nil {
		return 0, err
	}
	select {
	case seq := <-w.ch:
		return seq, nil
	case <-ctx.Done():
		_ = c.submit(forgetReq{uuid: w.uuid})
		return 0, fmt.Errorf("clonekv client: update of %q not confirmed by the server: %w", m.Key, ctx.Err())
	case <-c.done:
		return 0, ErrClosed
	}
}

func (c *Client) send(m kvmsg.Msg, w *waiter) error {
	r := &setReq{msg: m, w: w, done: make(chan error, 1)}
	if err := c.submit(r); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-c.done:
		return ErrClosed
	}
}

// newUpdate builds a KVSET with a fresh random UUID.
func newUpdate(key string, value []byte, ttl time.Duration, del bool) (kvmsg.Msg, error) {
	switch {
	case key == "":
		return kvmsg.Msg{}, fmt.Errorf("clonekv client: empty key")
	case len(key) > kvmsg.DefaultMaxKey:
		return kvmsg.Msg{}, fmt.Errorf("clonekv client: key is %d bytes, servers accept at most %d", len(key), kvmsg.DefaultMaxKey)
	case key == kvmsg.KeyHeartbeat || key == kvmsg.KeySnapshotEnd:
		return kvmsg.Msg{}, fmt.Errorf(errReservedPattern, key)
	case !del && len(value) == 0:
		return kvmsg.Msg{}, errEmptyValue
	case ttl < 0:
		return kvmsg.Msg{}, fmt.Errorf("clonekv client: negative ttl %v", ttl)
	}
	id := make([]byte, kvmsg.UUIDLen)
	if _, err := rand.Read(id); err != nil {
		return kvmsg.Msg{}, fmt.Errorf("clonekv client: uuid: %w", err)
	}
	id[6] = id[6]&0x0f | 0x40 // version 4
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	m := kvmsg.Msg{Key: []byte(key), UUID: id, Body: bytes.Clone(value)}
	if ttl > 0 {
		secs := (ttl + time.Second - 1) / time.Second
		if secs > kvmsg.MaxTTL {
			return kvmsg.Msg{}, fmt.Errorf("clonekv client: ttl %v is too long (max %ds)", ttl, kvmsg.MaxTTL)
		}
		m.Props = kvmsg.SetProp(nil, kvmsg.PropTTL, strconv.FormatInt(int64(secs), 10))
	}
	return m, nil
}

// Requests from API goroutines to the owner.
type (
	setReq struct {
		msg  kvmsg.Msg
		w    *waiter
		done chan error
	}
	watchReq struct {
		w   *watcher
		ack chan struct{}
	}
	unwatchReq struct{ w *watcher }
	forgetReq  struct{ uuid [16]byte }
	resyncReq  struct{}
)

// waiter is a SetWait waiting for its update's echo (matched by UUID).
type waiter struct {
	uuid [16]byte
	seq  int64 // the sequence the server gave it, once seen (owner only)
	ch   chan int64
}
