package client

// Event delivery: events are built while the owner works (some under the
// map's lock) and delivered after it, never blocking on a watcher.

import (
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

func (o *owner) emit(ev Event) {
	o.events = append(o.events, ev)
	o.flushEvents()
}

func (o *owner) flushEvents() {
	if len(o.events) == 0 {
		return
	}
	for w := range o.watchers {
		for _, ev := range o.events {
			if w.deliver(ev) {
				o.c.cnt.eventsLost.Add(1)
			}
		}
	}
	clear(o.events)
	o.events = o.events[:0]
}

// updateEvent is the event for an update or a KVSYNC received at now. Its
// TTL is what remains of the key's ttl, whichever form the server sent it
// in (kvmsg.Msg.Deadline); a deadline already passed reads as 1ns, as the
// key is still there until the server's delete arrives.
func updateEvent(m kvmsg.Msg, now time.Time) Event {
	ev := Event{Type: EventUpdate, Key: string(m.Key), Value: m.Body, Seq: m.Seq}
	if m.IsDelete() {
		ev.Type, ev.Value = EventDelete, nil
		return ev
	}
	if at, err := m.Deadline(now); err == nil && !at.IsZero() {
		ev.TTL = max(at.Sub(now), time.Nanosecond)
	}
	return ev
}
