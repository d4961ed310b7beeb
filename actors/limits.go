package actors

import (
	"fmt"
	"log/slog"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
)

// Reasons the store refuses an update because it is full (source
// collector, as for the other rejected KVSETs).
const (
	ReasonMaxKeys  = "max_keys"
	ReasonMaxBytes = "max_bytes"
)

// Capacity bounds what the store holds: at most MaxKeys keys and MaxBytes
// bytes of keys, UUIDs, properties and values (0: no bound). The store asks
// Admit before it applies each change, at the one place it applies them.
// Deletes are always admitted; an overwrite only needs its extra bytes to
// fit; a new key needs a free key and its bytes. A refused update takes no
// sequence: it is counted (collector, max_keys or max_bytes), taken back
// out of the accepted count and logged, rate-limited. The zero value and
// nil admit everything. Only the store's goroutine may use it.
type Capacity struct {
	MaxKeys  int
	MaxBytes int64
	Log      *stats.RejectLog

	bytes int64 // held now; kept only when MaxBytes is set
}

// Admit reports whether msg may be applied to m, and counts its bytes in
// if so (out, for a delete).
func (c *Capacity) Admit(m *kvmap.Map, msg kvmsg.Msg) bool {
	if c == nil || (c.MaxKeys <= 0 && c.MaxBytes <= 0) {
		return true
	}
	if c.MaxBytes <= 0 && (msg.IsDelete() || m.Len() < c.MaxKeys) {
		return true // no bytes to keep, and room for a key
	}
	old, exists := m.Get(msg.Key)
	var oldSize int64
	if exists {
		oldSize = int64(len(old.Key()) + len(old.UUID()) + len(old.Props()) + len(old.Body()))
	}
	if msg.IsDelete() {
		c.bytes -= oldSize
		return true
	}
	size := int64(len(msg.Key) + len(msg.UUID) + len(msg.Props) + len(msg.Body))
	switch {
	case !exists && c.MaxKeys > 0 && m.Len() >= c.MaxKeys:
		c.refuse(ReasonMaxKeys, fmt.Errorf("the store holds %d keys, limit %d", m.Len(), c.MaxKeys), msg)
		return false
	case c.MaxBytes > 0 && c.bytes-oldSize+size > c.MaxBytes:
		c.refuse(ReasonMaxBytes, fmt.Errorf("the store holds %d bytes, limit %d; this update adds %d", c.bytes, c.MaxBytes, size-oldSize), msg)
		return false
	}
	if c.MaxBytes > 0 {
		c.bytes += size - oldSize
	}
	return true
}

// Bytes returns the bytes held, as counted (0 when MaxBytes is not set).
func (c *Capacity) Bytes() int64 {
	if c == nil {
		return 0
	}
	return c.bytes
}

func (c *Capacity) refuse(reason string, err error, msg kvmsg.Msg) {
	if c.Log == nil {
		return
	}
	c.Log.Stats.UpdatesAccepted.Add(-1)
	key := msg.Key
	if len(key) > 64 {
		key = key[:64]
	}
	c.Log.Reject(stats.SourceCollector, reason, err, slog.String("key", fmt.Sprintf("%q", key)))
}
