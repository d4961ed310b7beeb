package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clonekv/clonekv/client"
)

// update is one put or delete the hub saw, in sequence order.
type update struct {
	del   bool
	key   string
	value []byte // shared with the client's event: never modified
	seq   int64
	ttl   time.Duration
}

func (u update) size() int { return len(u.key) + len(u.value) + 64 }

// item is what a watcher's queue carries: an update, or (snap != nil) a
// reset to a fresh snapshot.
type item struct {
	up   update
	snap *client.Snapshot
	tag  string // with snap: the stream id the reset starts
}

// watcher is one SSE connection's subscription. The hub is the only sender
// on ch; cut is closed (once, by the hub) when the hub drops the watcher,
// with reason set before.
type watcher struct {
	prefix string
	after  int64 // deliver only updates above this sequence (hub's lock)
	ch     chan item
	cut    chan struct{}
	reason string
}

// start is what a new watcher receives before its live updates: a snapshot
// to reset to, or (on a resume) the updates it missed; neither while the
// hub waits for the client's first snapshot (the reset then arrives on ch).
type start struct {
	snap   *client.Snapshot
	replay []update
	tag    string
	seq    int64
}

// expiry is a key's deadline, as known from the put the hub saw.
type expiry struct {
	at  time.Time
	seq int64
}

var (
	errTooManyWatchers = errors.New("too many watchers")
	errClosing         = errors.New("gateway shutting down")
)

// hub fans the client's single watch stream out to the SSE watchers and
// keeps the replay log. One goroutine (run) reads the client's channel;
// everything else is guarded by mu.
type hub struct {
	c           *client.Client
	log         *slog.Logger
	history     func() string
	queue       int
	maxWatchers int
	ringMax     int
	ringBytes   int

	mu       sync.Mutex
	closed   bool
	watchers map[*watcher]struct{}
	synced   bool   // the hub has a consistent base (not waiting for a re-join)
	tag      string // stream id: the history, or a random id per reset
	base     int64  // the log covers the sequences (base, last]
	last     int64
	issued   int64 // highest sequence named in an id on this stream
	ring     []update
	head, n  int
	bytes    int
	expires  map[string]expiry

	resets, cuts atomic.Int64
	done         chan struct{}
}

func newHub(c *client.Client, cfg *Config) *hub {
	return &hub{
		c: c, log: cfg.Logger, history: cfg.History, queue: cfg.WatchQueue, maxWatchers: cfg.MaxWatchers,
		ringMax: cfg.ReplayUpdates, ringBytes: cfg.ReplayBytes,
		watchers: map[*watcher]struct{}{}, ring: make([]update, cfg.ReplayUpdates),
		expires: map[string]expiry{}, done: make(chan struct{}),
	}
}

// run reads the client's events until ctx ends or the client closes, then
// cuts every watcher.
func (h *hub) run(ctx context.Context) {
	defer close(h.done)
	evs := h.c.Watch(ctx)
	if h.c.Synced() { // the first join may have completed before Watch
		h.mu.Lock()
		h.resetLocked()
		h.mu.Unlock()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	defer h.closeAll("gateway shutting down")
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				return
			}
			h.mu.Lock()
			h.handleLocked(ev)
			for range 255 { // the rest of a burst under the same lock
				select {
				case ev, ok = <-evs:
				default:
					ok = false
				}
				if !ok {
					break
				}
				h.handleLocked(ev)
			}
			h.mu.Unlock()
		case <-tick.C:
			// A lost ResyncDone (EventLost while re-joining) must not
			// leave the hub waiting for ever.
			h.mu.Lock()
			if !h.synced && h.c.Synced() {
				h.resetLocked()
			}
			h.mu.Unlock()
		}
	}
}

func (h *hub) handleLocked(ev client.Event) {
	switch ev.Type {
	case client.EventUpdate, client.EventDelete:
		if !h.synced || ev.Seq <= h.last {
			return // part of a re-join's differences, or in the base already
		}
		u := update{del: ev.Type == client.EventDelete, key: ev.Key, value: ev.Value, seq: ev.Seq, ttl: ev.TTL}
		h.last = ev.Seq
		h.issued = max(h.issued, ev.Seq)
		h.record(u)
		h.fanOut(u)
	case client.EventResyncStarted:
		h.synced = false
	case client.EventResyncDone:
		if h.synced && ev.Seq <= h.last {
			return // the first join, already taken as the base when the hub started
		}
		h.resetLocked()
	case client.EventLost:
		// The hub itself fell behind: its log has a hole. Start again from
		// the map if the client is consistent, else at the coming re-join.
		h.log.Warn("http gateway fell behind the client; watchers are reset", "lost", ev.Lost)
		if h.c.Synced() {
			h.resetLocked()
		} else {
			h.synced = false
		}
	}
}

// record appends u to the replay log, dropping the oldest updates past its
// bounds, and keeps the known expiries.
func (h *hub) record(u update) {
	if u.del || u.ttl == 0 {
		delete(h.expires, u.key)
	} else {
		h.expires[u.key] = expiry{at: time.Now().Add(u.ttl), seq: u.seq}
	}
	if h.ringMax == 0 {
		h.base = u.seq
		return
	}
	for h.n > 0 && (h.n == h.ringMax || h.bytes+u.size() > h.ringBytes) {
		old := h.ring[h.head]
		h.ring[h.head] = update{}
		h.head = (h.head + 1) % h.ringMax
		h.n--
		h.bytes -= old.size()
		h.base = old.seq
	}
	h.ring[(h.head+h.n)%h.ringMax] = u
	h.n++
	h.bytes += u.size()
}

func (h *hub) fanOut(u update) {
	for w := range h.watchers {
		if u.seq <= w.after || !strings.HasPrefix(u.key, w.prefix) {
			continue
		}
		select {
		case w.ch <- item{up: u}:
		default:
			h.cutSlowLocked(w)
		}
	}
}

// resetLocked starts a new stream from the client's current map: the log
// is emptied and every watcher is sent the snapshot.
func (h *hub) resetLocked() {
	snap := h.c.Snapshot()
	h.synced = true
	h.base, h.last, h.issued = snap.Seq, snap.Seq, snap.Seq
	clear(h.ring)
	h.head, h.n, h.bytes = 0, 0, 0
	h.tag = h.newTag()
	for k, e := range h.expires {
		if _, ok := snap.Get(k); !ok || !keySeqIs(snap, k, e.seq) {
			delete(h.expires, k)
		}
	}
	h.resets.Add(1)
	for w := range h.watchers {
		w.after = snap.Seq
		select {
		case w.ch <- item{snap: snap, tag: h.tag}:
		default:
			h.cutSlowLocked(w)
		}
	}
}

// keySeqIs reports whether key's entry in snap was written at seq.
func keySeqIs(snap *client.Snapshot, key string, seq int64) bool {
	found := false
	snap.Range(key, func(k string, _ []byte, s int64) bool {
		found = k == key && s == seq
		return false
	})
	return found
}

// newTag is the stream id: the server's history when it has one (its
// sequences then name one state for ever), else a fresh random id, so that
// an id from before a reset (perhaps a server restart that reused the same
// sequences) never resumes.
func (h *hub) newTag() string {
	if h.history != nil {
		if hist := h.history(); hist != "" {
			return hist
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "g" + hex.EncodeToString(b[:])
}

func (h *hub) cutSlowLocked(w *watcher) {
	h.cuts.Add(1)
	h.cutLocked(w, fmt.Sprintf("slow reader: %d updates queued and not read", cap(w.ch)))
}

func (h *hub) cutLocked(w *watcher, reason string) {
	if _, ok := h.watchers[w]; !ok {
		return
	}
	delete(h.watchers, w)
	w.reason = reason
	close(w.cut)
}

func (h *hub) closeAll(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.watchers {
		h.cutLocked(w, reason)
	}
}

// subscribe registers a watcher of prefix. lastID is the Last-Event-ID of
// a reconnect ("" for none): when it names this stream and a sequence the
// log covers, the watcher resumes after it.
func (h *hub) subscribe(prefix, lastID string) (*watcher, start, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, start{}, errClosing
	}
	if len(h.watchers) >= h.maxWatchers {
		return nil, start{}, errTooManyWatchers
	}
	w := &watcher{prefix: prefix, ch: make(chan item, h.queue), cut: make(chan struct{})}
	h.watchers[w] = struct{}{}
	if !h.synced {
		return w, start{}, nil // the reset arrives on w.ch
	}
	if tag, seq, ok := parseID(lastID); ok && tag == h.tag && seq >= h.base && seq <= h.issued {
		st := start{tag: h.tag, seq: max(seq, h.last)}
		for i := range h.n {
			u := h.ring[(h.head+i)%h.ringMax]
			if u.seq > seq && strings.HasPrefix(u.key, prefix) {
				st.replay = append(st.replay, u)
			}
		}
		w.after = max(seq, h.last)
		return w, st, nil
	}
	snap := h.c.Snapshot()
	h.issued = max(h.issued, snap.Seq)
	w.after = snap.Seq
	return w, start{snap: snap, tag: h.tag, seq: snap.Seq}, nil
}

func (h *hub) unsubscribe(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
}

// state is the hub's view for /v1/status.
func (h *hub) state() (tag string, watchers int, synced bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tag, len(h.watchers), h.synced
}

// noteExpiry records the deadline of a put this gateway made itself, so a
// read right after the PUT's answer shows it even if the hub has not yet
// seen the update come back (the client confirms a write before its
// watchers hear of it). A later update the hub already saw wins.
func (h *hub) noteExpiry(key string, seq int64, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.expires[key]; ok && e.seq >= seq {
		return
	}
	h.expires[key] = expiry{at: at, seq: seq}
}

// expiresAt returns key's deadline if the hub saw the put that set it and
// it is still the key's current value (seq).
func (h *hub) expiresAt(key string, seq int64) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.expires[key]
	if !ok || e.seq != seq {
		return time.Time{}, false
	}
	return e.at, true
}

// eventID is an SSE id: the stream id and the sequence.
func eventID(tag string, seq int64) string { return tag + ":" + strconv.FormatInt(seq, 10) }

func parseID(id string) (tag string, seq int64, ok bool) {
	i := strings.LastIndexByte(id, ':')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || seq < 0 {
		return "", 0, false
	}
	return id[:i], seq, true
}
