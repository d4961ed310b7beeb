package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/clonekv/clonekv/client"
)

// Event payloads (the data: line of each SSE event, one JSON object).
type (
	// putData: event put (a key set; in a snapshot after reset too).
	putData struct {
		Key         string `json:"key"`
		KeyEncoding string `json:"key_encoding,omitempty"`
		Value       string `json:"value"`
		Encoding    string `json:"encoding"`
		Seq         int64  `json:"seq"`
		TTL         int64  `json:"ttl,omitempty"` // seconds, when the put set one
	}
	// deleteData: event delete (a client's delete or a ttl's expiry).
	deleteData struct {
		Key         string `json:"key"`
		KeyEncoding string `json:"key_encoding,omitempty"`
		Seq         int64  `json:"seq"`
	}
	// resetData: event reset: forget every key; the snapshot follows as
	// put events, then synced.
	resetData struct {
		History string `json:"history"`
		Seq     int64  `json:"seq"`
		Prefix  string `json:"prefix"`
	}
	// syncedData: event synced: the watcher's picture matches the map at Seq;
	// live updates follow. Resumed: no reset was needed (only the missed
	// updates were sent).
	syncedData struct {
		History string `json:"history"`
		Seq     int64  `json:"seq"`
		Keys    int    `json:"keys"`
		Resumed bool   `json:"resumed"`
	}
	// closedData: event closed: the last event of a stream the gateway ends.
	closedData struct {
		Reason string `json:"reason"`
	}
)

// sseWriter formats events into a buffer written to the connection in one
// piece, each write bounded by a deadline.
type sseWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	buf   bytes.Buffer
	stall time.Duration
}

func (s *sseWriter) event(name, id string, hasID bool, data any) {
	s.buf.WriteString("event: ")
	s.buf.WriteString(name)
	s.buf.WriteByte('\n')
	if hasID {
		s.buf.WriteString("id: ")
		s.buf.WriteString(id)
		s.buf.WriteByte('\n')
	}
	s.buf.WriteString("data: ")
	b, _ := json.Marshal(data) // plain structs of strings and numbers: cannot fail
	s.buf.Write(b)
	s.buf.WriteString("\n\n")
}

func (s *sseWriter) put(id string, hasID bool, key string, value []byte, seq int64, ttl time.Duration) {
	d := putData{Key: key, Seq: seq, TTL: int64((ttl + time.Second - 1) / time.Second)}
	if !utf8.ValidString(key) {
		d.Key, d.KeyEncoding = base64.StdEncoding.EncodeToString([]byte(key)), encBase64
	}
	d.Value, d.Encoding = encodeValue(value)
	s.event("put", id, hasID, d)
}

func (s *sseWriter) update(tag string, u update) {
	id := eventID(tag, u.seq)
	if u.del {
		d := deleteData{Key: u.key, Seq: u.seq}
		if !utf8.ValidString(u.key) {
			d.Key, d.KeyEncoding = base64.StdEncoding.EncodeToString([]byte(u.key)), encBase64
		}
		s.event("delete", id, true, d)
		return
	}
	s.put(id, true, u.key, u.value, u.seq, u.ttl)
}

// flush writes what is buffered; past 64 KiB, callers flush as they go.
func (s *sseWriter) flush() error {
	if s.buf.Len() == 0 {
		return nil
	}
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.stall)); err != nil {
		return err
	}
	_, err := s.w.Write(s.buf.Bytes())
	s.buf.Reset()
	if err == nil {
		err = s.rc.Flush()
	}
	return err
}

// snapshot writes a reset and every key under prefix of snap, then synced.
// The reset clears the browser's Last-Event-ID ("id:" with no value), and
// only synced sets it, so a connection lost in the middle of a snapshot
// reconnects without an id and gets a whole snapshot again.
func (s *sseWriter) snapshot(g *Gateway, prefix, tag string, snap *client.Snapshot) error {
	s.event("reset", "", true, resetData{History: g.history(), Seq: snap.Seq, Prefix: prefix})
	n := 0
	var err error
	snap.Range(prefix, func(k string, v []byte, seq int64) bool {
		var ttl time.Duration
		if at, ok := g.hub.expiresAt(k, seq); ok {
			ttl = max(time.Until(at), time.Second)
		}
		s.put("", false, k, v, seq, ttl)
		n++
		if s.buf.Len() >= 64<<10 {
			err = s.flush()
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	s.event("synced", eventID(tag, snap.Seq), true, syncedData{History: g.history(), Seq: snap.Seq, Keys: n})
	return s.flush()
}

// watch serves GET /v1/watch?prefix=P as text/event-stream.
func (g *Gateway) watch(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	if len(prefix) > g.cfg.MaxKey {
		fail(w, http.StatusBadRequest, "key_too_large", "prefix longer than the longest key")
		return
	}
	if !g.startStream() {
		fail(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	defer g.streams.Done()
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("last_event_id") // for a first connect, which cannot set the header from a browser
	}
	wt, st, err := g.hub.subscribe(prefix, lastID)
	switch {
	case errors.Is(err, errTooManyWatchers):
		fail(w, http.StatusServiceUnavailable, "too_many_watchers", "the gateway serves its maximum number of watchers; try again later")
		return
	case err != nil:
		fail(w, http.StatusServiceUnavailable, "shutting_down", err.Error())
		return
	}
	defer g.hub.unsubscribe(wt)

	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // a stream outlives any read timeout
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell nginx-like proxies not to buffer
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: rc, stall: g.cfg.StallTimeout}
	s.buf.WriteString("retry: 2000\n\n")

	tag := st.tag
	switch {
	case st.snap != nil:
		err = s.snapshot(g, prefix, tag, st.snap)
	case st.tag != "":
		for _, u := range st.replay {
			s.update(tag, u)
			if s.buf.Len() >= 64<<10 {
				if err = s.flush(); err != nil {
					break
				}
			}
		}
		if err == nil {
			s.event("synced", eventID(tag, st.seq), true, syncedData{History: g.history(), Seq: st.seq, Keys: -1, Resumed: true})
			err = s.flush()
		}
	default:
		err = s.flush() // waiting for the gateway's first snapshot: the reset arrives on the queue
	}
	if err != nil {
		return
	}

	beat := time.NewTicker(g.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case it := <-wt.ch:
			err = s.item(g, prefix, &tag, it)
			for err == nil && s.buf.Len() < 64<<10 { // the rest of a burst, one write
				select {
				case it = <-wt.ch:
					err = s.item(g, prefix, &tag, it)
					continue
				default:
				}
				break
			}
			if err == nil {
				err = s.flush()
			}
		case <-beat.C:
			s.buf.WriteString(": heartbeat\n\n")
			err = s.flush()
		case <-wt.cut:
			s.buf.Reset()
			s.event("closed", "", false, closedData{Reason: wt.reason})
			_ = s.flush()
			return
		case <-r.Context().Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *sseWriter) item(g *Gateway, prefix string, tag *string, it item) error {
	if it.snap != nil {
		*tag = it.tag
		return s.snapshot(g, prefix, it.tag, it.snap)
	}
	s.update(*tag, it.up)
	return nil
}
