package client

import (
	"fmt"
	"strconv"

	"github.com/clonekv/clonekv/kvmsg"
)

// Properties clonekv's server puts on KTHXBAI and HUGZ (the Guide's clients
// ignore them), and the one it puts on a KTHXBAI that is not a snapshot.
const (
	propHistory = "history" // the server's history id: 32 lowercase hex chars
	propSeq     = "seq"     // HUGZ: the server's current sequence
	propRefused = "refused" // KTHXBAI: the snapshot request was refused or aborted, and why
)

// hugzTop returns the sequence a HUGZ says the server is at: its seq
// property (clonekv), else its sequence frame (the Guide's Model Six
// servers send their current sequence there; RFC 12 and Model Five send
// 0), and 0 when it says nothing.
func hugzTop(m kvmsg.Msg) int64 {
	if v, ok := m.Prop(propSeq); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return max(m.Seq, 0)
}

// heartbeat acts on one HUGZ. It is never applied and never taken for a
// restart (its sequence does not take part in the backwards check): a HUGZ
// whose sequence is below what arrived before it says nothing about
// updates. It reports whether it ended the session or started a re-join.
//
//   - A history id other than the one of the map held: the server is
//     another map now (it was replaced or wiped); re-join the same server.
//   - Following everything (FilterLocal), a sequence above the last one
//     applied: updates published before this HUGZ never arrived, which no
//     later update may reveal if the server goes quiet (tail loss). One HUGZ
//     is enough on a server that publishes its HUGZ in line with its
//     updates (the Guide's), but a server may read its sequence a moment
//     before its publisher has sent the last updates, so the client
//     re-joins when the next HUGZ finds it still behind the first one's
//     sequence: within two heartbeat intervals of the loss.
func (o *owner) heartbeat(m kvmsg.Msg) bool {
	if o.st != stFollowing {
		return false
	}
	if id, ok := m.Prop(propHistory); ok && o.history != "" && id != o.history {
		o.c.cnt.restarts.Add(1)
		o.fail(fmt.Sprintf("server's history changed from %s to %s", o.history, id), false)
		return true
	}
	if !o.strict {
		return false // sequences of other subtrees are not seen: no conclusion
	}
	top := hugzTop(m)
	if top <= o.lastApplied {
		o.tailMark = 0
		return false
	}
	if o.tailMark > o.lastApplied {
		o.rejoin(fmt.Sprintf("server is at %d (HUGZ) but updates %d..%d never arrived", top, o.lastApplied+1, o.tailMark))
		o.c.cnt.gaps.Add(1) // counted once Synced is false
		return true
	}
	o.tailMark = top
	return false
}
