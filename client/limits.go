package client

import (
	"fmt"
	"sync"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

// Drop reasons beyond kvmsg's.
const (
	reasonKeyTooLong   = string(kvmsg.ReasonKeyTooLong)
	reasonBodyTooLong  = string(kvmsg.ReasonBodyTooLong)
	reasonPropsTooLong = string(kvmsg.ReasonPropsTooLong)
	reasonResumeReply  = "resume_reply" // a delta reply that does not hold together
)

// drops counts messages from the server the client did not take, per
// reason, and remembers the first reason of the current join for the
// error a failed join reports.
type drops struct {
	mu       sync.Mutex
	byReason map[string]int64
	logged   map[string]time.Time
}

func (d *drops) snapshot() map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int64, len(d.byReason))
	for k, v := range d.byReason {
		out[k] = v
	}
	return out
}

// add counts one drop and reports whether it should be logged (at most
// once per reason every 10s).
func (d *drops) add(reason string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byReason == nil {
		d.byReason, d.logged = map[string]int64{}, map[string]time.Time{}
	}
	d.byReason[reason]++
	if now.Sub(d.logged[reason]) < 10*time.Second {
		return false
	}
	d.logged[reason] = now
	return true
}

// badInput is what a join (or the stream since the last one) could not
// decode: how many messages, and the first reason.
type badInput struct {
	n     int
	first string
}

func (b badInput) String() string {
	if b.n == 0 {
		return ""
	}
	return fmt.Sprintf("server sent %d messages clonekv could not decode: %s", b.n, b.first)
}

// drop counts a message the client does not take from the server.
func (o *owner) drop(reason, detail string) {
	o.c.cnt.malformed.Add(1)
	if o.bad.n == 0 {
		o.bad.first = detail
	}
	o.bad.n++
	if o.c.drops.add(reason, time.Now()) {
		o.log.Warn("dropped a message from the server", "server", o.c.eps[o.ep].name, "reason", reason, "detail", detail)
	}
}

// decode validates a message from the server and checks it against the
// client's limits. ok false: not a Clone message at all (counted). A
// message over a limit keeps its sequence (so it still counts for gap
// detection) but is marked: keep false when its key is over MaxKey (nothing
// can be stored under it), and its body and properties are dropped (the
// key then reads as deleted: the client does not hold what it cannot hold
// in full) when they are over theirs.
func (o *owner) decode(frames [][]byte) (m kvmsg.Msg, keep, ok bool) {
	m, err := kvmsg.Decode(frames, kvmsg.Limits{})
	if err != nil {
		reason := "malformed"
		if de, isDE := err.(*kvmsg.DecodeError); isDE {
			reason = string(de.Reason)
		}
		o.drop(reason, err.Error())
		return m, false, false
	}
	switch {
	case len(m.Key) > o.o.MaxKey:
		o.drop(reasonKeyTooLong, fmt.Sprintf("key is %d bytes, limit %d", len(m.Key), o.o.MaxKey))
		return m, false, true
	case len(m.Body) > o.o.MaxBody:
		o.drop(reasonBodyTooLong, fmt.Sprintf("value of %q is %d bytes, limit %d", clipKey(m.Key), len(m.Body), o.o.MaxBody))
		m.Body, m.Props = nil, nil
	case len(m.Props) > o.o.MaxProps:
		o.drop(reasonPropsTooLong, fmt.Sprintf("properties of %q are %d bytes, limit %d", clipKey(m.Key), len(m.Props), o.o.MaxProps))
		m.Body, m.Props = nil, nil
	}
	return m, true, true
}

func clipKey(k []byte) string {
	if len(k) > 64 {
		return string(k[:64]) + "..."
	}
	return string(k)
}
