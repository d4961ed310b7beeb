package client

// The resume extension, client side (README "Protocol additions"): what
// each endpoint advertised, the choice between a resume request and the
// plain ICANHAZ?, and the reading of the reply's KTHXBAI.

import (
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
)

// advert is what one endpoint last said about resuming, in a KTHXBAI or a
// HUGZ. It outlives sessions: a reconnect to the same endpoint (the server
// restarted, the connection dropped) resumes on what the endpoint said
// before, without waiting for a heartbeat.
type advert struct {
	heard   bool   // a HUGZ or KTHXBAI from this endpoint was seen
	resume  bool   // its last one offered resume
	history string // ...for this history id
	broken  bool   // it answered a resume request with an unusable delta: never ask it again
}

// resumeReq is the request of the join in flight.
type resumeReq struct {
	resume  bool   // a three-frame resume request was sent
	history string // its history
	since   int64  // its since
	why     string // plain: why no resume was asked (a full-reason word)
}

// Client-side reasons for a whole snapshot (EventFull, Stats.FullReasons),
// beside the server's (history, compacted, ahead, bad_request).
const (
	whyNotOffered     = "not_offered"     // the endpoint does not advertise resume (or was not heard from in time)
	whyOtherHistory   = "other_history"   // it advertises resume for another history
	whyUnknownHistory = "unknown_history" // the map held has no history id
	whyDisabled       = "no_resume"       // Options.NoResume
	whyBadDelta       = "bad_delta"       // its delta reply was unusable: asked again plainly
	whyUnmarked       = "unmarked"        // a resume request answered without resume=
	whyRequested      = "requested"       // Client.Resync: the application asked for a whole snapshot
	whyServerDisabled = "disabled"        // the server's reason: it keeps no window (clonesrv --resume-window 0)
)

// noteAdvert records what endpoint idx said in the properties of a HUGZ or
// a non-refused KTHXBAI. A KTHXBAI answering a resume request says
// resume=delta or resume=full, which offers resume as well as resume=1,
// except a full one with reason=disabled (the server keeps no window).
func (o *owner) noteAdvert(idx int, props []byte) {
	a := &o.adverts[idx]
	a.heard = true
	v, _ := kvmsg.LookupProp(props, kvmsg.PropResume)
	switch string(v) {
	case kvmsg.ResumeOffered, kvmsg.ResumeDelta:
		a.resume = true
	case kvmsg.ResumeFull:
		// Full because its window is off (reason=disabled): it cannot
		// resume until it says resume=1 again.
		r, _ := kvmsg.LookupProp(props, kvmsg.PropReason)
		a.resume = string(r) != whyServerDisabled
	default:
		a.resume = false
	}
	h, _ := kvmsg.LookupProp(props, kvmsg.PropHistory)
	a.history = string(h)
}

// base is the state a resume would start from: the history and the
// sequence of the map held (or of Options.Since before the first join,
// taking the endpoint's advertised history when none was given). ok is
// false when there is nothing to resume.
func (o *owner) base(a advert) (history string, since int64, ok bool) {
	if o.syncedEP < 0 {
		if o.o.Since <= 0 {
			return "", 0, false // a first join: nothing held
		}
		if o.o.SinceHistory == "" {
			return a.history, o.o.Since, true
		}
		return o.o.SinceHistory, o.o.Since, true
	}
	return o.history, o.lastApplied, true
}

// plan decides the request for the current endpoint.
func (o *owner) plan() resumeReq {
	a := o.adverts[o.sess.idx]
	hist, since, ok := o.base(a)
	switch {
	case !ok:
		return resumeReq{why: "first_join"}
	case o.o.NoResume:
		return resumeReq{why: whyDisabled}
	case o.plainWhy != "":
		return resumeReq{why: o.plainWhy}
	case a.broken:
		return resumeReq{why: whyBadDelta}
	case !a.resume:
		return resumeReq{why: whyNotOffered}
	case hist == "":
		return resumeReq{why: whyUnknownHistory}
	case a.history != hist:
		return resumeReq{why: whyOtherHistory}
	}
	return resumeReq{resume: true, history: hist, since: since}
}

// needAdvert: a re-join that could resume, to an endpoint never heard
// from, waits for its first HUGZ before choosing (it subscribed first, so
// the HUGZ comes on the subscriber the join uses anyway).
func (o *owner) needAdvert() bool {
	if o.o.NoResume || o.o.AdvertWait <= 0 || o.plainWhy != "" || o.adverts[o.sess.idx].heard {
		return false
	}
	if _, _, ok := o.base(advert{}); !ok {
		return false
	}
	return o.syncedEP < 0 || o.history != ""
}

// ask starts the request once the subscriber is connected: at once, or
// after waiting for the endpoint's first HUGZ.
func (o *owner) ask() {
	if o.needAdvert() {
		o.st = stAdvert
		o.deadline = time.Now().Add(o.o.AdvertWait)
		return
	}
	o.requestSnapshot()
}

// resumeProps is the third frame of a resume request.
func resumeProps(history string, since int64) []byte {
	p := kvmsg.SetProp(nil, kvmsg.PropHistory, history)
	return kvmsg.SetProp(p, kvmsg.PropSince, strconv.FormatInt(since, 10))
}

// replyVerdict reads the KTHXBAI that ends a reply: delta (the buffered
// messages are the updates after since: merge them) or not (a whole
// snapshot: replace the map), with the reason of a whole one. A delta
// that does not hold together (another since or history than asked, a
// sequence below since, messages out of order, or answering a plain
// request) is unusable: bad is set, and the client asks again plainly.
func (o *owner) replyVerdict(end kvmsg.Msg) (delta bool, reason string, bad string) {
	v, has := end.Prop(kvmsg.PropResume)
	if !o.rq.resume {
		if v == kvmsg.ResumeDelta {
			return false, "", "a delta in reply to a plain snapshot request"
		}
		if r, ok := end.Prop(kvmsg.PropReason); ok && v == kvmsg.ResumeFull && r != "" {
			return false, r, ""
		}
		return false, o.rq.why, ""
	}
	switch {
	case !has || (v != kvmsg.ResumeDelta && v != kvmsg.ResumeFull):
		return false, whyUnmarked, ""
	case v == kvmsg.ResumeFull:
		r, _ := end.Prop(kvmsg.PropReason)
		if r == "" {
			r = "unspecified"
		}
		return false, r, ""
	}
	since, _ := end.Prop(kvmsg.PropSince)
	hist, _ := end.Prop(kvmsg.PropHistory)
	switch {
	case since != strconv.FormatInt(o.rq.since, 10):
		return false, "", "delta since=" + since + ", asked " + strconv.FormatInt(o.rq.since, 10)
	case hist != o.rq.history:
		return false, "", "delta of history " + hist + ", asked " + o.rq.history
	case end.Seq < o.rq.since:
		return false, "", "delta ends at " + strconv.FormatInt(end.Seq, 10) + ", below since"
	case !o.replyOK || o.replyTop > end.Seq:
		return false, "", "delta messages out of order or outside since..seq"
	}
	return true, "", ""
}

// Kinds of join (JoinStats.Kind).
const (
	joinSnapshot = "snapshot" // a first join: a whole snapshot, nothing held before
	joinDelta    = "delta"    // only the updates missed
	joinFull     = "full"     // a whole snapshot replacing the map held
)

// JoinStats describe one completed join.
type JoinStats struct {
	Kind     string        // "snapshot" (a first join), "delta" (resumed) or "full" (a whole snapshot replaced the map)
	Reason   string        // full: why it was not a delta (see EventFull)
	Since    int64         // delta, or a full answering a resume request: the sequence asked after
	Seq      int64         // the sequence joined at (buffered updates included)
	Messages int64         // messages of the reply, KTHXBAI included
	Bytes    int64         // bytes of the reply (every frame)
	Took     time.Duration // from the request that was answered to the swap: the reply's transfer and application
	Connect  time.Duration // from the start of the join (the session's sockets made, or the re-join begun) to that request
}

// rejoinStats are the counters of completed re-joins, written by the owner.
type rejoinStats struct {
	mu              sync.Mutex
	resumes, fulls  int64
	reasons         map[string]int64
	messages, bytes int64
	last            JoinStats
}

func (c *Client) noteJoin(j JoinStats) {
	r := &c.rs
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = j
	if j.Kind == joinSnapshot {
		return
	}
	r.messages += j.Messages
	r.bytes += j.Bytes
	if j.Kind == joinDelta {
		r.resumes++
		return
	}
	r.fulls++
	if r.reasons == nil {
		r.reasons = map[string]int64{}
	}
	r.reasons[j.Reason]++
}

func (r *rejoinStats) fill(st *Stats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st.Resumes, st.FullResyncs = r.resumes, r.fulls
	st.FullReasons = maps.Clone(r.reasons)
	if st.FullReasons == nil {
		st.FullReasons = map[string]int64{}
	}
	st.RejoinMessages, st.RejoinBytes = r.messages, r.bytes
	st.LastJoin = r.last
}

// advertised acts on a HUGZ just noted (noteAdvert) while a join waits:
// the awaited first HUGZ lets a join in stAdvert ask; and a resume request
// that nothing has answered yet is asked again plainly when the endpoint
// says it cannot resume it after all (a server restarted without resume,
// or with another history, would never answer it as one). It reports
// whether it sent a request.
func (o *owner) advertised() bool {
	switch {
	case o.st == stAdvert:
		o.requestSnapshot()
		return true
	case o.st == stSnapshot && o.rq.resume && o.joinMsgs == 0 && !o.plan().resume:
		o.log.Debug("server no longer offers to resume this history: asking plainly", "server", o.sess.ep.name)
		o.requestSnapshot()
		return true
	}
	return false
}
