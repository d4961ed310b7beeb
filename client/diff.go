package client

import (
	"bytes"

	"github.com/clonekv/clonekv/kvmap"
)

// diff appends the events that turn old into new (both under prefix): an
// update for each key added or changed, a delete for each key gone. It is a
// merge walk of two ordered maps, O(len(old)+len(new)), run once per
// re-join so that a watcher's picture stays right across it.
func diff(old, new *kvmap.View, prefix []byte, out *[]Event) {
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
			*out = append(*out, Event{Type: EventDelete, Key: string(ea.Key()), Seq: ea.Seq()})
			ea, oka = a.Next()
		case c > 0: // only in new: added
			*out = append(*out, updateEvent(eb.Msg()))
			eb, okb = b.Next()
		default:
			if !bytes.Equal(ea.Body(), eb.Body()) || !bytes.Equal(ea.Props(), eb.Props()) {
				*out = append(*out, updateEvent(eb.Msg()))
			}
			ea, oka = a.Next()
			eb, okb = b.Next()
		}
	}
}
