package actors

import (
	"encoding/binary"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
	"github.com/clonekv/clonekv/transport/adapter"
)

// Heartbeat asks the publisher to send HUGZ.
type Heartbeat struct{}

// publish is a committed batch for the publisher, with release: the
// collector's credit for the batch (nil for batches that have none, such as
// expiries). The publisher hands release to the PUB writer, which calls it
// once the batch is on the socket; that is what paces the collector. Only
// the store sends it, so the credit is reachable from the store→publisher
// path alone. To return credits at another point (a durable commit, say),
// release them there and send a nil release.
type publish struct {
	*Committed
	release func()
}

// PublisherConfig configures the publisher.
type PublisherConfig struct {
	Writer *actor.PID // the PUB socket's adapter.Writer
	Stats  *stats.Server
	// Resume adds resume=1 to HUGZ: the server answers resume requests.
	Resume bool
}

// Publisher encodes committed updates as KVPUB frames, and heartbeats as
// HUGZ, and hands them to the PUB writer. One batch in, one batch out: the
// frames of a batch share two allocations, and nothing is encoded more than
// once however many subscribers there are (the PUB socket fans out).
type Publisher struct {
	cfg PublisherConfig
	// seq and history are what HUGZ carries: the last sequence handed to
	// the writer and the history id.
	seq     int64
	history string
}

// NewPublisher returns the publisher actor.
func NewPublisher(cfg PublisherConfig) *Publisher { return &Publisher{cfg: cfg} }

// Receive handles the store's batches and *Heartbeat.
func (p *Publisher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *publish:
		p.seq, p.history = m.Seq, m.History
		// Replayed batches were published before the restart.
		if m.Replayed || len(m.Updates) == 0 {
			if m.release != nil {
				m.release()
			}
			return
		}
		ctx.Send(p.cfg.Writer, &adapter.Outbound{Msgs: EncodeUpdates(m.Updates), Done: m.release})
		p.cfg.Stats.UpdatesPublished.Add(int64(len(m.Updates)))
	case *Heartbeat:
		hugz := &transport.Flat{}
		hugz.Add([]byte(kvmsg.KeyHeartbeat), make([]byte, kvmsg.SeqLen), nil, HeartbeatProps(p.history, p.seq, p.cfg.Resume), nil)
		ctx.Send(p.cfg.Writer, &adapter.Outbound{Msgs: hugz})
		p.cfg.Stats.HeartbeatsSent.Add(1)
	}
}

// EncodeUpdates lays the updates' wire frames out flat, in order: one
// buffer for all their bytes, one for the frame sizes.
func EncodeUpdates(ups []Update) *transport.Flat {
	size := 0
	for i := range ups {
		m := &ups[i].Msg
		size += len(m.Key) + kvmsg.SeqLen + len(m.UUID) + len(m.Props) + len(m.Body)
	}
	f := &transport.Flat{
		Data:   make([]byte, 0, size),
		Sizes:  make([]uint64, 0, len(ups)*kvmsg.NumFrames),
		PerMsg: kvmsg.NumFrames,
	}
	var seq [kvmsg.SeqLen]byte
	for i := range ups {
		m := &ups[i].Msg
		binary.BigEndian.PutUint64(seq[:], uint64(m.Seq))
		f.Add(m.Key, seq[:], m.UUID, m.Props, m.Body)
	}
	return f
}

// HeartbeatProps are the properties of HUGZ: "history=<id>\nseq=<seq>\n"
// (the sequence frame stays 0 for RFC 12 and Model Five clients), then
// "resume=1\n" when the server answers resume requests. Nil before the
// history is known.
func HeartbeatProps(history string, seq int64, resume bool) []byte {
	if history == "" {
		return nil
	}
	b := make([]byte, 0, 64)
	b = append(b, "history="...)
	b = append(b, history...)
	b = append(b, "\nseq="...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, '\n')
	if resume {
		b = append(b, kvmsg.PropResume+"="+kvmsg.ResumeOffered+"\n"...)
	}
	return b
}
