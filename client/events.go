package client

import (
	"strconv"
	"sync"
	"time"
)

// EventType is what an Event reports.
type EventType int

// Event types.
const (
	// EventUpdate: Key now holds Value (set by sequence Seq).
	EventUpdate EventType = iota + 1
	// EventDelete: Key was deleted (by a client or its ttl) at Seq.
	EventDelete
	// EventResyncStarted: the client stopped trusting its map (Reason says
	// why) and is fetching a fresh snapshot. Until EventResyncDone, reads
	// serve the last consistent map, which may be stale.
	EventResyncStarted
	// EventResyncDone: the client matches the server at Seq again (Keys
	// keys under the subtree, from Server). The differences between the map
	// before and after were delivered just before it as EventUpdate and
	// EventDelete events.
	EventResyncDone
	// EventServerSwitched: the client now follows Server instead of From.
	EventServerSwitched
	// EventLost: this watcher's channel was full and Lost events were
	// dropped. Re-read the map (Client.Snapshot) to catch up.
	EventLost
	// EventReset: the server the client re-joined holds another history
	// (its history id differs from the one the client's map came from: the
	// data was wiped or replaced). The old map is gone as a whole: the
	// events that follow, until EventResyncDone, are the new map's keys as
	// updates; there are no deletes for the old keys. Drop everything
	// derived from earlier events. Seq is the new map's sequence.
	EventReset
	// EventResumed: the re-join received only the updates the client had
	// missed (the server's resume extension): those after Since up to Seq.
	// The events that follow, until EventResyncDone, are exactly those
	// updates and deletes, each once, in sequence order, each with its own
	// sequence (and then the updates that arrived meanwhile on the
	// subscriber). Nothing else changed.
	EventResumed
	// EventFull: the re-join received a whole snapshot at Seq that replaced
	// the map (keys it does not hold are gone). Reason says why it was not
	// a resume: the server's reason (compacted: the client's sequence is
	// older than the server retains; ahead: the client's sequence is above
	// the server's; disabled: the server keeps no window; bad_request;
	// unmarked: the server answered a resume request without saying how)
	// or the client's (not_offered: the server does not advertise resume;
	// other_history, unknown_history; no_resume: Options.NoResume;
	// bad_delta; requested: Client.Resync; first_join). The events that follow, until EventResyncDone, are the
	// differences between the old map and the new one (deletes carry Seq).
	// A changed history id is EventReset instead.
	EventFull
)

var eventNames = map[EventType]string{
	EventUpdate: "update", EventDelete: "delete", EventResyncStarted: "resync-started",
	EventResyncDone: "resync-done", EventServerSwitched: "server-switched", EventLost: "lost",
	EventReset: "reset", EventResumed: "resumed", EventFull: "full",
}

func (t EventType) String() string {
	if s, ok := eventNames[t]; ok {
		return s
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one thing a watcher is told. Value is shared: do not modify it.
type Event struct {
	Type   EventType
	Key    string
	Value  []byte
	Seq    int64
	TTL    time.Duration // the update's ttl (0: none)
	Reason string        // EventResyncStarted, EventReset, EventFull: why
	Since  int64         // EventResumed: the sequence the client resumed after
	Server string        // EventResyncDone, EventServerSwitched, EventReset, EventResumed, EventFull: the endpoint followed now
	From   string        // EventServerSwitched: the endpoint followed before
	Keys   int           // EventResyncDone: keys under the subtree
	Lost   int           // EventLost: how many events were dropped
}

// watcher is one Watch channel. Only the owner goroutine sends on ch; close
// may also be called by Watch itself when registration fails, hence once.
type watcher struct {
	ch   chan Event
	lost int
	once sync.Once
}

func (w *watcher) close() { w.once.Do(func() { close(w.ch) }) }

// deliver hands ev to the watcher without ever blocking: a full channel
// counts the event as lost, and the count is delivered (EventLost) as soon
// as there is room, before any later event. It reports whether ev was lost.
func (w *watcher) deliver(ev Event) (lost bool) {
	if !w.flush() {
		w.lost++
		return true
	}
	select {
	case w.ch <- ev:
		return false
	default:
		w.lost++
		return true
	}
}

// flush tries to deliver the pending EventLost; it reports whether none is
// pending any more.
func (w *watcher) flush() bool {
	if w.lost == 0 {
		return true
	}
	select {
	case w.ch <- Event{Type: EventLost, Lost: w.lost}:
		w.lost = 0
		return true
	default:
		return false
	}
}
