package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/clonekv/clonekv/client"
)

// text renders a key or value for a text line: as is when it is printable
// without tabs or newlines, else Go-quoted.
func text(s string) string {
	plain := utf8.ValidString(s) && s != "" && !strings.HasPrefix(s, `"`) &&
		strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == '\t' }) < 0
	if plain {
		return s
	}
	return strconv.Quote(s)
}

// record is the JSON form of an entry or event.
type record struct {
	Type        string `json:"type,omitempty"`
	Seq         int64  `json:"seq,omitempty"`
	Since       int64  `json:"since,omitempty"` // resumed: the sequence resumed after
	Key         string `json:"key,omitempty"`
	Value       string `json:"value,omitempty"`
	ValueBase64 []byte `json:"value_base64,omitempty"` // when the value is not UTF-8
	TTL         int64  `json:"ttl,omitempty"`          // seconds
	Reason      string `json:"reason,omitempty"`
	Server      string `json:"server,omitempty"`
	From        string `json:"from,omitempty"`
	Keys        *int   `json:"keys,omitempty"`
	Lost        int    `json:"lost,omitempty"`
}

func (r *record) setValue(v []byte) {
	if utf8.Valid(v) {
		r.Value = string(v)
	} else {
		r.ValueBase64 = v
	}
}

func writeJSON(w io.Writer, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeEvent prints one event: a text line "TYPE SEQ ..." or a JSON line.
func writeEvent(w io.Writer, ev client.Event, asJSON bool) error {
	if asJSON {
		r := record{Type: ev.Type.String(), Seq: ev.Seq, Key: ev.Key, TTL: int64(ev.TTL / time.Second),
			Reason: ev.Reason, Server: ev.Server, From: ev.From, Lost: ev.Lost, Since: ev.Since}
		if ev.Type == client.EventUpdate {
			r.setValue(ev.Value)
		}
		if ev.Type == client.EventResyncDone {
			r.Keys = &ev.Keys
		}
		return writeJSON(w, r)
	}
	var line string
	switch ev.Type {
	case client.EventUpdate:
		line = fmt.Sprintf("update %d %s %s", ev.Seq, text(ev.Key), text(string(ev.Value)))
		if ev.TTL > 0 {
			line += " ttl=" + max(ev.TTL.Round(time.Millisecond), time.Millisecond).String()
		}
	case client.EventDelete:
		line = fmt.Sprintf("delete %d %s", ev.Seq, text(ev.Key))
	case client.EventResyncStarted:
		line = fmt.Sprintf("resync-started %d %s", ev.Seq, ev.Reason)
	case client.EventResyncDone:
		line = fmt.Sprintf("resync-done %d %d keys from %s", ev.Seq, ev.Keys, ev.Server)
	case client.EventServerSwitched:
		line = fmt.Sprintf("server-switched %s -> %s", ev.From, ev.Server)
	case client.EventLost:
		line = fmt.Sprintf("lost %d events (output too slow)", ev.Lost)
	case client.EventReset:
		line = fmt.Sprintf("reset %d %s (the server holds another map: what follows is all of it)", ev.Seq, ev.Reason)
	case client.EventResumed:
		line = fmt.Sprintf("resumed %d after %d from %s (what follows up to resync-done is every change missed)", ev.Seq, ev.Since, ev.Server)
	case client.EventFull:
		line = fmt.Sprintf("full %d %s (a whole snapshot replaced the map: what follows up to resync-done are the differences)", ev.Seq, ev.Reason)
	default:
		line = ev.Type.String()
	}
	_, err := io.WriteString(w, line+"\n")
	return err
}

// writeStats prints the client's counters as one line (watch --stats).
func writeStats(w io.Writer, st client.Stats) {
	reasons := make([]string, 0, len(st.FullReasons))
	for r, n := range st.FullReasons {
		reasons = append(reasons, fmt.Sprintf("%s:%d", r, n))
	}
	sort.Strings(reasons)
	lj := st.LastJoin
	fmt.Fprintf(w, "stats server=%s synced=%v seq=%d keys=%d joins=%d resumes=%d full=%d full_reasons=%s rejoin_messages=%d rejoin_bytes=%d "+
		"last_join=%s last_join_messages=%d last_join_bytes=%d last_join_took=%v gaps=%d disconnects=%d refused=%d lost_events=%d\n",
		st.Server, st.Synced, st.Seq, st.Keys, st.Joins, st.Resumes, st.FullResyncs, strings.Join(reasons, ","), st.RejoinMessages, st.RejoinBytes,
		lj.Kind, lj.Messages, lj.Bytes, lj.Took.Round(time.Millisecond), st.Gaps, st.Disconnects, st.Refused, st.EventsLost)
}
