package client

import (
	"bytes"
	"time"

	"github.com/clonekv/clonekv/kvmap"
)

// diff appends the events that turn old into new (both under prefix): an
// update for each key added or changed, a delete for each key gone. It is a
// merge walk of two ordered maps, O(len(old)+len(new)), run once per
// re-join so that a watcher's picture stays right across it. A delete
// carries at, the sequence the client re-joined at (the old entry's own
// sequence is below it, and a consumer that skips events not above a
// snapshot's sequence would drop it).
func diff(old, new *kvmap.View, prefix []byte, at int64, out *[]Event) {
	now := time.Now()
	a, b := old.Cursor(prefix), new.Cursor(prefix)
	defer a.Close()
	defer b.Close()
	ea, oka := a.Next()
	eb, okb := b.Next()
	for oka || okb {
		c := 0
		switch {
		case !oka:
			c = 1
		case !okb:
			c = -1
		default:
			c = bytes.Compare(ea.Key(), eb.Key())
		}
		switch {
		case c < 0: // only in old: deleted
			*out = append(*out, Event{Type: EventDelete, Key: string(ea.Key()), Seq: at})
			ea, oka = a.Next()
		case c > 0: // only in new: added
			*out = append(*out, updateEvent(eb.Msg(), now))
			eb, okb = b.Next()
		default:
			if !bytes.Equal(ea.Body(), eb.Body()) || !bytes.Equal(ea.Props(), eb.Props()) {
				*out = append(*out, updateEvent(eb.Msg(), now))
			}
			ea, oka = a.Next()
			eb, okb = b.Next()
		}
	}
}
