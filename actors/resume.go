package actors

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/window"
)

// The resume extension's side of the snapshot responder (README "Protocol
// additions", resume): a three-frame ICANHAZ? (command, subtree, props with
// history= and since=) is answered with the updates after since, from the
// store's resume window, when the history matches and the window covers
// them; otherwise with a full snapshot whose KTHXBAI says why.

// ReasonResumeRequest is the reject reason of a malformed third frame.
const ReasonResumeRequest = "resume_request"

// Why a resume request got a full snapshot: the KTHXBAI's reason= and the
// metric label.
const (
	FullHistory    = "history"     // the client's history is not the server's
	FullCompacted  = "compacted"   // since is older than the window
	FullAhead      = "ahead"       // since is above the server's sequence
	FullBadRequest = "bad_request" // the third frame did not parse
	FullDisabled   = "disabled"    // the server runs without a window (--resume-window 0)
)

// resumeAsk is what a stream knows of its resume request.
type resumeAsk struct {
	asked   bool   // the request had a third frame
	history string // the client's history id
	since   int64
	reason  string         // set for a full reply, before or at the view
	isDelta bool           // answered with a delta
	delta   *window.Cursor // the delta still to send (nil once released)
	bytes   int64          // frame bytes produced for the reply
}

var historyID = regexp.MustCompile(`^[0-9a-f]{32}$`)

var errResumeRequest = errors.New("resume request")

// parseResume reads a request's third frame. A malformed one is counted
// and logged (reason resume_request) and answered as a full snapshot.
func (a *Snapshot) parseResume(props []byte, attrs ...any) resumeAsk {
	r := resumeAsk{asked: true}
	if err := a.checkResume(props, &r); err != nil {
		a.cfg.Log.Reject(stats.SourceSnapshot, ReasonResumeRequest, fmt.Errorf("%w: %w", errResumeRequest, err), attrs...)
		return resumeAsk{asked: true, reason: FullBadRequest}
	}
	if !a.cfg.Resume {
		r.reason = FullDisabled
	}
	return r
}

func (a *Snapshot) checkResume(props []byte, r *resumeAsk) error {
	if err := kvmsg.ValidateProps(props); err != nil {
		return err
	}
	h, ok := kvmsg.LookupProp(props, kvmsg.PropHistory)
	if !ok || !historyID.Match(h) {
		return fmt.Errorf("history %q: want 32 lowercase hex digits", clipProp(h))
	}
	s, ok := kvmsg.LookupProp(props, kvmsg.PropSince)
	if !ok {
		return errors.New("no since property")
	}
	since, err := strconv.ParseInt(string(s), 10, 64)
	if err != nil || since < 0 || len(s) == 0 || s[0] == '+' {
		return fmt.Errorf("since %q: want a decimal sequence >= 0", clipProp(s))
	}
	r.history, r.since = string(h), since
	return nil
}

func clipProp(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// awaitAhead reports whether a resume request ahead of this node's view
// waits for the node to catch up (AheadWait): the store is asked again for
// a view once its sequence reaches since, and holds that request until
// then. A view that reaches since gets the delta; at the deadline the
// snapshot responder takes the view as it is (check), and the request
// gets a full snapshot (reason=ahead, startDelta).
func (a *Snapshot) awaitAhead(ctx actor.Context, s *stream, v *View, now time.Time) bool {
	r := &s.resume
	if a.cfg.AheadWait <= 0 || !s.aheadUntil.IsZero() || !r.asked || r.reason != "" || v.Window == nil ||
		r.history != v.History || r.since <= v.Seq {
		return false
	}
	s.aheadUntil = now.Add(a.cfg.AheadWait)
	s.awaiting = true
	a.cfg.Stats.ResumeAheadWaits.Add(1)
	a.cfg.Logger.Debug("resume request ahead of this node: waiting for it to catch up", "peer", fmt.Sprintf("%x", s.peer),
		"since", r.since, "seq", v.Seq, "wait", a.cfg.AheadWait)
	ctx.Send(a.cfg.Store, &ViewRequest{ReplyTo: ctx.Self(), Tag: s, MinSeq: r.since, Until: s.aheadUntil})
	return true
}

// startDelta decides, at the view, how a resume request is answered: it
// returns true and sets the stream's delta cursor when the window covers
// the request, and otherwise records why a full snapshot follows.
func (a *Snapshot) startDelta(s *stream, v *View) bool {
	r := &s.resume
	if !r.asked || r.reason != "" {
		return false
	}
	switch {
	case v.Window == nil:
		r.reason = FullDisabled
	case r.history != v.History:
		r.reason = FullHistory
	case r.since > v.Seq:
		r.reason = FullAhead
	case !v.Window.Covers(r.since):
		r.reason = FullCompacted
	default:
		r.delta, r.isDelta = v.Window.Cursor(r.since, s.subtree), true
		return true
	}
	return false
}

// produceDelta fills ch with the stream's next updates from the window
// and, after the last, the KTHXBAI.
func (a *Snapshot) produceDelta(s *stream, ch *chunk) {
	for ch.msgs.Len() < a.cfg.ChunkSize && len(ch.msgs.Data) < a.cfg.ChunkBytes {
		u, ok := s.resume.delta.Next()
		if !ok {
			ch.add([]byte(kvmsg.KeySnapshotEnd), s.seq, nil, a.endProps(s), s.subtree)
			ch.final, s.finished = true, true
			return
		}
		ch.add(u.Key, u.Seq, u.UUID, u.Props, u.Body)
		s.keys++
	}
}

// endProps are the properties of a stream's KTHXBAI: the history id, and
// with resume on resume=1 for a plain request, or the outcome of a resume
// request.
func (a *Snapshot) endProps(s *stream) []byte {
	var p []byte
	if s.history != "" {
		p = kvmsg.SetProp(p, kvmsg.PropHistory, s.history)
	}
	switch r := &s.resume; {
	case !r.asked:
		if a.cfg.Resume && s.history != "" {
			p = kvmsg.SetProp(p, kvmsg.PropResume, kvmsg.ResumeOffered)
		}
	case r.isDelta:
		p = kvmsg.SetProp(p, kvmsg.PropResume, kvmsg.ResumeDelta)
		p = kvmsg.SetProp(p, kvmsg.PropSince, strconv.FormatInt(r.since, 10))
	default:
		p = kvmsg.SetProp(p, kvmsg.PropResume, kvmsg.ResumeFull)
		p = kvmsg.SetProp(p, kvmsg.PropReason, r.reason)
	}
	return p
}

// countResume adds a chunk's bytes to its stream's resume reply.
func (a *Snapshot) countResume(s *stream, ch *chunk) {
	if s.resume.asked {
		s.resume.bytes += int64(len(ch.msgs.Data))
	}
}

// resumeDone counts a resume reply whose KTHXBAI was delivered.
func (a *Snapshot) resumeDone(s *stream) {
	r := &s.resume
	if !r.asked {
		return
	}
	result := resumeResult(r)
	a.cfg.Stats.Resumes.Add(result, 1)
	a.cfg.Stats.ResumeMessages.Add(resultOf(result), s.keys)
	a.cfg.Stats.ResumeBytes.Add(resultOf(result), r.bytes)
	a.cfg.Logger.Debug("resume answered", "peer", fmt.Sprintf("%x", s.peer), "result", result, "since", r.since, "seq", s.seq,
		"messages", s.keys, "bytes", r.bytes, "duration", time.Since(s.started))
}

// resumeResult is the Stats.Resumes key of a reply: "delta", or
// "full:<reason>".
func resumeResult(r *resumeAsk) string {
	if r.isDelta {
		return kvmsg.ResumeDelta
	}
	return kvmsg.ResumeFull + ":" + r.reason
}

// resultOf is "delta" or "full".
func resultOf(key string) string {
	if key == kvmsg.ResumeDelta {
		return key
	}
	return kvmsg.ResumeFull
}
