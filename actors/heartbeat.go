package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// HeartbeatSender sends the publisher a *Heartbeat every Interval, so that
// clients can tell a live server from a dead one (Model Six fails over on
// silence). It sends them whether or not updates flow: a client following a
// quiet subtree sees none of the other subtrees' traffic and would otherwise
// take a busy server for a dead one.
type HeartbeatSender struct {
	Publisher *actor.PID
	Interval  time.Duration
	t         *ticker
}

// Receive starts the ticker on Started and stops it on Stopping.
func (h *HeartbeatSender) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		if h.Interval > 0 && h.t == nil {
			h.t = startTicker(ctx.ActorSystem().Root, h.Publisher, h.Interval, func() any { return &Heartbeat{} })
		}
	case *actor.Stopping:
		h.t.Stop()
	}
}
