package gateway

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/kvmsg"
)

// Value encodings: how a JSON value field is to be read.
const (
	encText   = "utf8"   // the value is the string itself
	encBase64 = "base64" // the value is standard base64 of the bytes
)

// Item is one key in a snapshot answer.
type Item struct {
	Key         string `json:"key"`
	KeyEncoding string `json:"key_encoding,omitempty"` // "base64" when the key is not UTF-8
	Value       string `json:"value"`
	Encoding    string `json:"encoding"` // "utf8" or "base64"
	Seq         int64  `json:"seq"`
	// Expires is the key's deadline when the gateway saw the put that set
	// its ttl (RFC 3339, UTC); absent when it has none or it is unknown.
	Expires string `json:"expires,omitempty"`
}

// List is a GET answer for a prefix.
type List struct {
	History string `json:"history"`
	Seq     int64  `json:"seq"`
	Synced  bool   `json:"synced"`
	Prefix  string `json:"prefix"`
	Items   []Item `json:"items"`
	// More: the limit cut the list; ask again with ?after= the last key.
	More bool `json:"more,omitempty"`
}

// One is a GET answer for one key (?exact=1).
type One struct {
	History string `json:"history"`
	Seq     int64  `json:"seq"` // the snapshot's sequence (Item.Seq is the key's)
	Item    Item   `json:"item"`
}

// Written is the answer to PUT and DELETE.
type Written struct {
	History string `json:"history"`
	Key     string `json:"key"`
	Seq     int64  `json:"seq"` // the sequence the server published it at
	TTL     int64  `json:"ttl,omitempty"`
}

// Status is the answer of /v1/status.
type Status struct {
	History     string `json:"history"`
	Seq         int64  `json:"seq"`
	Synced      bool   `json:"synced"`
	Keys        int    `json:"keys"`
	Server      string `json:"server"`
	Watchers    int    `json:"watchers"`
	Subscribers *int   `json:"subscribers,omitempty"`
	ReadOnly    bool   `json:"read_only"`
	TokenNeeded bool   `json:"token_required"`
	MaxKey      int    `json:"max_key"`
	MaxBody     int    `json:"max_body"`
}

// apiError is the body of every error answer.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"error"`
}

// putBody is a JSON PUT body (Content-Type: application/json).
type putBody struct {
	Value    *string `json:"value"`
	Encoding string  `json:"encoding"`
	TTL      string  `json:"ttl"`
}

func (g *Gateway) routes() http.Handler {
	ui := uiHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p != "/v1/watch" { // streams bound each write themselves
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(g.cfg.WriteTimeout + 30*time.Second))
		}
		switch {
		case p == "/v1/kv" || strings.HasPrefix(p, "/v1/kv/"):
			switch r.Method {
			case http.MethodGet, http.MethodHead:
				g.get(w, r)
			case http.MethodPut:
				g.write(w, r, false)
			case http.MethodDelete:
				g.write(w, r, true)
			default:
				w.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
				fail(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+p)
			}
		case p == "/v1/watch":
			if r.Method != http.MethodGet {
				w.Header().Set("Allow", "GET")
				fail(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+p)
				return
			}
			g.watch(w, r)
		case p == "/v1/status":
			if !getOnly(w, r) {
				return
			}
			g.status(w, r)
		case p == "/ui":
			http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
		case strings.HasPrefix(p, "/ui/"):
			if !getOnly(w, r) {
				return
			}
			ui.ServeHTTP(w, r)
		default:
			fail(w, http.StatusNotFound, "unknown_route", "no such route: "+p)
		}
	})
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	fail(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
	return false
}

// target is the key or prefix a /v1/kv request names: the path after
// /v1/kv (leading slash included), or ?key= when the path ends there.
func (g *Gateway) target(r *http.Request) (string, *apiError) {
	key := strings.TrimPrefix(r.URL.Path, "/v1/kv")
	if q, ok := r.URL.Query()["key"]; ok {
		if key != "" && key != "/" {
			return "", &apiError{"bad_key", "give the key in the path or as ?key=, not both"}
		}
		if len(q) != 1 {
			return "", &apiError{"bad_key", "one ?key= only"}
		}
		key = q[0]
	}
	if len(key) > g.cfg.MaxKey {
		return "", &apiError{"key_too_large", fmt.Sprintf("key is %d bytes, the server accepts at most %d", len(key), g.cfg.MaxKey)}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "." || seg == ".." {
			return "", &apiError{"bad_key", "keys with . or .. path segments are refused (they would read differently after path cleaning)"}
		}
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] == 0x7f {
			return "", &apiError{"bad_key", "keys with control characters are refused over HTTP"}
		}
	}
	return key, nil
}

func (g *Gateway) snapshot(w http.ResponseWriter) (*client.Snapshot, bool) {
	snap := g.c.Snapshot()
	if snap.Seq == 0 && !snap.Synced {
		fail(w, http.StatusServiceUnavailable, "not_synced", "the gateway has not received its first snapshot from the server yet")
		return nil, false
	}
	return snap, true
}

func (g *Gateway) get(w http.ResponseWriter, r *http.Request) {
	key, aerr := g.target(r)
	if aerr != nil {
		fail(w, http.StatusBadRequest, aerr.Code, aerr.Message)
		return
	}
	q := r.URL.Query()
	snap, ok := g.snapshot(w)
	if !ok {
		return
	}
	if q.Get("exact") == "1" || q.Get("exact") == "true" {
		v, found := snap.Get(key)
		if !found {
			fail(w, http.StatusNotFound, "not_found", "no key "+strconv.Quote(key))
			return
		}
		var seq int64
		snap.Range(key, func(k string, _ []byte, s int64) bool { seq = s; return false })
		reply(w, http.StatusOK, One{History: g.history(), Seq: snap.Seq, Item: g.item(key, v, seq)})
		return
	}
	limit := 1000
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fail(w, http.StatusBadRequest, "bad_limit", "limit must be a positive integer")
			return
		}
		limit = n
	}
	limit = min(limit, g.cfg.MaxItems)
	after := q.Get("after")
	out := List{History: g.history(), Seq: snap.Seq, Synced: snap.Synced, Prefix: key, Items: []Item{}}
	snap.Range(key, func(k string, v []byte, seq int64) bool {
		if after != "" && k <= after {
			return true
		}
		if len(out.Items) == limit {
			out.More = true
			return false
		}
		out.Items = append(out.Items, g.item(k, v, seq))
		return true
	})
	reply(w, http.StatusOK, out)
}

func (g *Gateway) item(k string, v []byte, seq int64) Item {
	it := Item{Key: k, Seq: seq}
	if !utf8.ValidString(k) {
		it.Key, it.KeyEncoding = base64.StdEncoding.EncodeToString([]byte(k)), encBase64
	}
	it.Value, it.Encoding = encodeValue(v)
	if at, ok := g.hub.expiresAt(k, seq); ok {
		it.Expires = at.UTC().Format(time.RFC3339)
	}
	return it
}

// encodeValue returns v as text when it is UTF-8, else as base64.
func encodeValue(v []byte) (string, string) {
	if utf8.Valid(v) {
		return string(v), encText
	}
	return base64.StdEncoding.EncodeToString(v), encBase64
}

func (g *Gateway) write(w http.ResponseWriter, r *http.Request, del bool) {
	switch {
	case g.cfg.ReadOnly:
		fail(w, http.StatusForbidden, "read_only", "writes over HTTP are turned off on this server (--http-read-only)")
		return
	case g.cfg.Token != "" && !g.authorized(r):
		w.Header().Set("WWW-Authenticate", `Bearer realm="clonekv"`)
		fail(w, http.StatusUnauthorized, "unauthorized", "writes need the header Authorization: Bearer <token>")
		return
	case g.closing():
		fail(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	key, aerr := g.target(r)
	if aerr == nil {
		aerr = checkWriteKey(key)
	}
	if aerr != nil {
		fail(w, http.StatusBadRequest, aerr.Code, aerr.Message)
		return
	}
	var value []byte
	var ttl time.Duration
	if !del {
		var status int
		value, ttl, status, aerr = g.readValue(w, r)
		if aerr != nil {
			fail(w, status, aerr.Code, aerr.Message)
			return
		}
	}
	if _, ok := g.snapshot(w); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.WriteTimeout)
	defer cancel()
	var seq int64
	var err error
	if del {
		seq, err = g.c.DeleteWait(ctx, key)
	} else {
		start := time.Now()
		seq, err = g.c.SetWait(ctx, key, value, ttl)
		if err == nil && ttl > 0 {
			g.hub.noteExpiry(key, seq, start.Add(ttl))
		}
	}
	switch {
	case err == nil:
		reply(w, http.StatusOK, Written{History: g.history(), Key: key, Seq: seq, TTL: int64((ttl + time.Second - 1) / time.Second)})
	case errors.Is(err, client.ErrBackpressure):
		fail(w, http.StatusServiceUnavailable, "backpressure", "too many updates queued for the server; try again")
	case errors.Is(err, client.ErrNotConnected):
		fail(w, http.StatusServiceUnavailable, "not_connected", "the gateway is re-joining the server; try again")
	case errors.Is(err, client.ErrClosed):
		fail(w, http.StatusServiceUnavailable, "shutting_down", "the gateway is closed")
	case errors.Is(err, context.DeadlineExceeded):
		fail(w, http.StatusGatewayTimeout, "timeout", fmt.Sprintf("the server did not publish the update within %v (it may still do so)", g.cfg.WriteTimeout))
	case errors.Is(err, context.Canceled):
		fail(w, http.StatusServiceUnavailable, "canceled", "request canceled")
	default:
		fail(w, http.StatusBadRequest, "rejected", err.Error())
	}
}

// checkWriteKey refuses what the server's collector would drop.
func checkWriteKey(key string) *apiError {
	switch key {
	case "":
		return &apiError{"bad_key", "empty key: give it in the path (/v1/kv/app/x) or as ?key="}
	case kvmsg.KeyHeartbeat, kvmsg.KeySnapshotEnd:
		return &apiError{"reserved_key", "key " + strconv.Quote(key) + " is reserved by the protocol"}
	}
	return nil
}

func (g *Gateway) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(g.cfg.Token)) == 1
}

// readValue reads a PUT's value and ttl: the body as it is, or, with
// Content-Type application/json, a {"value","encoding","ttl"} object. The
// body is bounded in size (MaxBody, plus room for JSON and base64) and in
// time (BodyTimeout).
func (g *Gateway) readValue(w http.ResponseWriter, r *http.Request) ([]byte, time.Duration, int, *apiError) {
	ttl, aerr := parseTTL(r.URL.Query().Get("ttl"))
	if aerr != nil {
		return nil, 0, http.StatusBadRequest, aerr
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isJSON := ct == "application/json"
	limit := int64(g.cfg.MaxBody)
	if isJSON {
		limit = limit*4/3 + 4096
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(g.cfg.BodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, 0, http.StatusRequestEntityTooLarge, &apiError{"too_large", fmt.Sprintf("body larger than %d bytes (the server accepts values of at most %d)", limit, g.cfg.MaxBody)}
	case err != nil:
		return nil, 0, http.StatusBadRequest, &apiError{"bad_body", "reading the body: " + err.Error()}
	}
	if isJSON {
		var pb putBody
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&pb); err != nil || dec.More() {
			msg := "malformed JSON body"
			if err != nil {
				msg += ": " + err.Error()
			}
			return nil, 0, http.StatusBadRequest, &apiError{"bad_json", msg + ` (want {"value":"...","encoding":"utf8"|"base64","ttl":"30s"}; send a JSON document as a value with another Content-Type)`}
		}
		if pb.Value == nil {
			return nil, 0, http.StatusBadRequest, &apiError{"bad_json", `missing "value"`}
		}
		switch pb.Encoding {
		case "", encText:
			body = []byte(*pb.Value)
		case encBase64:
			if body, err = base64.StdEncoding.DecodeString(*pb.Value); err != nil {
				return nil, 0, http.StatusBadRequest, &apiError{"bad_value", "value is not valid base64"}
			}
		default:
			return nil, 0, http.StatusBadRequest, &apiError{"bad_json", `encoding must be "utf8" or "base64"`}
		}
		if pb.TTL != "" {
			if ttl, aerr = parseTTL(pb.TTL); aerr != nil {
				return nil, 0, http.StatusBadRequest, aerr
			}
		}
	}
	switch {
	case len(body) == 0:
		return nil, 0, http.StatusBadRequest, &apiError{"empty_value", "empty value (an empty value means delete in the protocol: use DELETE)"}
	case len(body) > g.cfg.MaxBody:
		return nil, 0, http.StatusRequestEntityTooLarge, &apiError{"too_large", fmt.Sprintf("value is %d bytes, the server accepts at most %d", len(body), g.cfg.MaxBody)}
	}
	return body, ttl, 0, nil
}

// parseTTL reads a ttl: a Go duration ("30s", "1h") or whole seconds
// ("30"); "" is none. The protocol counts whole seconds (rounded up).
func parseTTL(s string) (time.Duration, *apiError) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.ParseInt(s, 10, 64)
		if nerr != nil {
			return 0, &apiError{"bad_ttl", fmt.Sprintf("ttl %q: want a duration such as 30s or 1h, or whole seconds", s)}
		}
		if n > kvmsg.MaxTTL {
			return 0, &apiError{"bad_ttl", fmt.Sprintf("ttl %q: at most %d seconds", s, kvmsg.MaxTTL)}
		}
		d = time.Duration(n) * time.Second
	}
	switch {
	case d <= 0:
		return 0, &apiError{"bad_ttl", fmt.Sprintf("ttl %q: must be positive", s)}
	case (d+time.Second-1)/time.Second > kvmsg.MaxTTL:
		return 0, &apiError{"bad_ttl", fmt.Sprintf("ttl %q: at most %d seconds", s, kvmsg.MaxTTL)}
	}
	return d, nil
}

func (g *Gateway) status(w http.ResponseWriter, _ *http.Request) {
	st := g.c.Stats()
	_, watchers, _ := g.hub.state()
	out := Status{
		History: g.history(), Seq: st.Seq, Synced: st.Synced, Keys: st.Keys, Server: st.Server, Watchers: watchers,
		ReadOnly: g.cfg.ReadOnly, TokenNeeded: g.cfg.Token != "", MaxKey: g.cfg.MaxKey, MaxBody: g.cfg.MaxBody,
	}
	if g.cfg.Subscribers != nil {
		n := g.cfg.Subscribers()
		out.Subscribers = &n
	}
	reply(w, http.StatusOK, out)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	reply(w, status, apiError{Code: code, Message: msg})
}
