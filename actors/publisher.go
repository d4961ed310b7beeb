package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	"clonekv/kvmsg"
	"clonekv/stats"
	"clonekv/transport"
)

// Heartbeat asks the publisher to send HUGZ.
type Heartbeat struct{}

// PublisherConfig configures the publisher.
type PublisherConfig struct {
	Writer *actor.PID // the PUB socket's transport.Writer
	Stats  *stats.Server
}

// Publisher encodes committed updates as KVPUB frames, and heartbeats as
// HUGZ, and hands them to the PUB writer. One batch in, one batch out: the
// frames of a batch share two allocations, and nothing is encoded more than
// once however many subscribers there are (the PUB socket fans out).
type Publisher struct {
	cfg PublisherConfig
}

// NewPublisher returns the publisher actor.
func NewPublisher(cfg PublisherConfig) *Publisher { return &Publisher{cfg: cfg} }

// Receive handles *Committed and *Heartbeat.
func (p *Publisher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *Committed:
		ctx.Send(p.cfg.Writer, &transport.Outbound{Msgs: EncodeUpdates(m.Updates), Done: m.Done})
		p.cfg.Stats.UpdatesPublished.Add(int64(len(m.Updates)))
	case *Heartbeat:
		hugz := kvmsg.Msg{Key: []byte(kvmsg.KeyHeartbeat)}
		ctx.Send(p.cfg.Writer, &transport.Outbound{Msgs: [][][]byte{hugz.Frames()}})
		p.cfg.Stats.HeartbeatsSent.Add(1)
	}
}

// EncodeUpdates returns the wire frames of each update.
func EncodeUpdates(ups []Update) [][][]byte {
	frames := make([][]byte, 0, len(ups)*kvmsg.NumFrames)
	seqs := make([]byte, len(ups)*kvmsg.SeqLen)
	msgs := make([][][]byte, len(ups))
	for i := range ups {
		start := len(frames)
		frames = ups[i].Msg.AppendFrames(frames, seqs[i*kvmsg.SeqLen:])
		msgs[i] = frames[start:len(frames):len(frames)]
	}
	return msgs
}
