// Package actors holds clonekv's server actors, one file each, with the
// messages each one takes beside it. The store actor is the only place state
// changes (sequence, map); the others feed it or follow it:
//
//	adapter.Reader ─► Collector ─► Proposer ─► raft (log on disk) ─► FSM ─► Store ─► Committed ─► Publisher ─► adapter.Writer (PUB)
//	                                  ▲                                         ▲  │                 Reaper (expiry index)
//	                                  └──────────── Expire (through the log) ───┼──┼──────────────── ┘
//	                                                                            │  └───────────────► HandlerRunner ─► queue ─► Handler.OnCommit
//	adapter.Router ─► Snapshot ─── ViewRequest/View ───────────────────────────┘
//	                     └─► adapter.Send chunks back to the Router
//	Heartbeat ─► Publisher (HUGZ)
//
// Actors never block on a socket; socket I/O lives in transport.
package actors

import (
	"time"

	"github.com/clonekv/clonekv/kvmap"
	"github.com/clonekv/clonekv/kvmsg"
)

// Update is one committed change, as the store applied it. Msg.Seq is the
// sequence the store gave it. Inside the server it is immutable: the same
// value goes to the publisher, the reaper and every handler runner (which
// gives its Handler a copy, see Batch).
type Update struct {
	Msg kvmsg.Msg
	// TTL is the ttl the client asked for (0: none). ExpiresAt is the
	// absolute expiry the store computed from it (zero: never).
	TTL       time.Duration
	ExpiresAt time.Time
	// Expired is true for the delete the store published because the key's
	// ttl passed.
	Expired bool
}

// Committed is what the store sends its followers (the reaper, each
// HandlerRunner) after each batch it applies, in sequence order. It carries
// nothing but the updates: the collector's credit travels to the publisher
// alone (see publish).
type Committed struct {
	Updates []Update
	// Seq is the store's sequence after the batch and History the history
	// id (empty until the log names it).
	Seq     int64
	History string
	// Replayed marks what the store re-applied from the log on start:
	// clients saw it before the restart, so it is not published again.
	Replayed bool
	// Restored, when set, is the whole map after a snapshot restore (no
	// Updates): handlers that keep derived state rebuild it from this.
	Restored *kvmap.View
}
