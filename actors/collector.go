package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport/adapter"
)

// Reasons the collector rejects a KVSET beyond kvmsg's decode reasons.
const (
	ReasonEmptyKey    = "empty_key"
	ReasonReservedKey = "reserved_key"
	ReasonTTL         = "ttl"
)

// Updates is a batch of validated client updates for the proposer.
type Updates struct {
	Items []Pending
	Done  func() // returns the batch's credit; passed on to Committed
}

// Pending is a validated update waiting for its entry in the log (and then
// its sequence number).
type Pending struct {
	Msg kvmsg.Msg
	TTL time.Duration
}

// CollectorConfig configures the collector.
type CollectorConfig struct {
	Proposer *actor.PID
	Limits   kvmsg.Limits
	Stats    *stats.Server
	Log      *stats.RejectLog
}

// Collector turns raw KVSET frames from the collector socket into validated
// updates for the store: it decodes each message, checks the key and parses
// the ttl. Bad input is dropped, counted and logged (rate-limited) here, so
// only well-formed updates reach the log and the store.
type Collector struct {
	cfg CollectorConfig
}

// NewCollector returns the collector actor.
func NewCollector(cfg CollectorConfig) *Collector { return &Collector{cfg: cfg} }

// Receive handles *adapter.Inbound.
func (c *Collector) Receive(ctx actor.Context) {
	in, ok := ctx.Message().(*adapter.Inbound)
	if !ok {
		return
	}
	items := make([]Pending, 0, len(in.Msgs))
	for i, frames := range in.Msgs {
		p, err := c.validate(frames, in.Counts[i])
		if err != nil {
			c.reject(frames, in.Counts[i], err)
			continue
		}
		items = append(items, p)
	}
	if len(items) == 0 {
		in.Done()
		return
	}
	c.cfg.Stats.UpdatesAccepted.Add(int64(len(items)))
	c.cfg.Stats.StoreBacklog.Add(1)
	ctx.Send(c.cfg.Proposer, &Updates{Items: items, Done: in.Done})
}

// rejectError carries a collector-level reason.
type rejectError struct {
	reason string
	err    error
}

func (e *rejectError) Error() string { return e.err.Error() }

func (c *Collector) validate(frames [][]byte, count int) (Pending, error) {
	if count != len(frames) {
		return Pending{}, &kvmsg.DecodeError{Reason: kvmsg.ReasonFrameCount, Detail: fmt.Sprintf("got %d frames, want %d", count, kvmsg.NumFrames)}
	}
	msg, err := kvmsg.Decode(frames, c.cfg.Limits)
	if err != nil {
		return Pending{}, err
	}
	switch {
	case len(msg.Key) == 0:
		return Pending{}, &rejectError{ReasonEmptyKey, errors.New("empty key")}
	case string(msg.Key) == kvmsg.KeySnapshotEnd || string(msg.Key) == kvmsg.KeyHeartbeat:
		return Pending{}, &rejectError{ReasonReservedKey, fmt.Errorf("key %q is reserved by the protocol", msg.Key)}
	}
	ttl, err := msg.TTL()
	if err != nil {
		return Pending{}, &rejectError{ReasonTTL, err}
	}
	return Pending{Msg: msg, TTL: ttl}, nil
}

func (c *Collector) reject(frames [][]byte, count int, err error) {
	reason := "malformed"
	var de *kvmsg.DecodeError
	var re *rejectError
	switch {
	case errors.As(err, &de):
		reason = string(de.Reason)
	case errors.As(err, &re):
		reason = re.reason
	}
	attrs := []any{slog.Int("frames", count)}
	if len(frames) > 0 {
		key := frames[0]
		if len(key) > 64 {
			key = key[:64]
		}
		attrs = append(attrs, slog.String("key", fmt.Sprintf("%q", key)))
	}
	c.cfg.Log.Reject(stats.SourceCollector, reason, err, attrs...)
}
