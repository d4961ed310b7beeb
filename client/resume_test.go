package client

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
)

const (
	histA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	histB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// change is one update as a server published it.
type change struct {
	key, value string // value "": a delete
	seq        int64
}

// rejoinEvents reads events up to the end of the next re-join: everything
// after its resync-started up to and including its resync-done.
func rejoinEvents(t testing.TB, events <-chan Event, d time.Duration) []Event {
	t.Helper()
	nextEvent(t, events, EventResyncStarted, d)
	var got []Event
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch channel closed during a re-join")
			}
			got = append(got, ev)
			if ev.Type == EventResyncDone {
				return got
			}
		case <-timer.C:
			t.Fatalf("no resync-done within %v; events so far: %s", d, eventSummary(got))
		}
	}
}

func eventSummary(evs []Event) string {
	var b strings.Builder
	for i, ev := range evs {
		if i == 12 {
			fmt.Fprintf(&b, " ... (%d in all)", len(evs))
			break
		}
		fmt.Fprintf(&b, " %v(%s@%d %s)", ev.Type, ev.Key, ev.Seq, ev.Reason)
	}
	return b.String()
}

// checkDelta requires a resumed re-join's events to be exactly: resumed,
// then want in order (each once, with its own sequence), then resync-done.
func checkDelta(t testing.TB, got []Event, want []change) {
	t.Helper()
	if len(got) != len(want)+2 || got[0].Type != EventResumed || got[len(got)-1].Type != EventResyncDone {
		t.Fatalf("re-join events: %s; want resumed, %d changes, resync-done", eventSummary(got), len(want))
	}
	for i, w := range want {
		ev := got[i+1]
		wantType := EventUpdate
		if w.value == "" {
			wantType = EventDelete
		}
		if ev.Type != wantType || ev.Key != w.key || string(ev.Value) != w.value || ev.Seq != w.seq {
			t.Fatalf("change %d: got %v %s=%q at %d, want %v %s=%q at %d", i, ev.Type, ev.Key, ev.Value, ev.Seq, wantType, w.key, w.value, w.seq)
		}
	}
}

// fill stores n keys k000000.. on the fake, with history h and resume on.
func fill(f *fakeServer, h string, n int) {
	f.do(func(s *fakeState) {
		s.history, s.resume = h, true
		for i := range n {
			s.publish(fmt.Sprintf("k%06d", i), "v0", false)
		}
	})
}

// missed publishes n updates on the fake (sets of existing and new keys,
// some keys twice, every seventh a delete), returning them as published.
func missed(f *fakeServer, n, keys int) []change {
	var out []change
	f.do(func(s *fakeState) {
		for i := range n {
			key := fmt.Sprintf("k%06d", (i*7919)%(keys+keys/10))
			value := fmt.Sprintf("m%d", i)
			if i%7 == 3 {
				value = ""
			}
			s.publish(key, value, false)
			out = append(out, change{key, value, s.seq})
		}
	})
	return out
}

// TestResumeAfterOutage is issue 14 behaviour 1 against the fake server
// (the contract as written; TestResumeAfterOutageServer runs it against
// clonekv's server with 100,000 keys): a client of a 20,000-key map loses its connection for 2s while 1,000
// updates happen; on reconnect it receives those 1,000 (not 100,000), its
// map equals the server's, and its watcher gets exactly the missed
// changes, in order, each once.
func TestResumeAfterOutage(t *testing.T) {
	t.Parallel()
	const keys, updates = 20_000, 1_000 // 100,000 against the real server: TestResumeAfterOutageServer
	f := startFake(t)
	fill(f, histA, keys)
	px := startProxy(t, f.port)
	c := dialWithin(t, Options{Endpoints: []string{px.endpoint()}, HeartbeatTimeout: 2 * time.Second, JoinTimeout: 20 * time.Second, EventBuffer: 4096}, 60*time.Second)
	events := c.Watch(t.Context())
	f.waitSame(t, c)

	px.cut()
	cutAt := time.Now()
	waitFor(t, 15*time.Second, "the client to notice the outage", func() bool { return !c.Synced() })
	want := missed(f, updates, keys)
	time.Sleep(time.Until(cutAt.Add(2 * time.Second))) // the outage lasts 2s
	px.restore()

	checkDelta(t, rejoinEvents(t, events, 30*time.Second), want)
	f.waitSame(t, c)
	st := c.Stats()
	if st.LastJoin.Kind != joinDelta || st.LastJoin.Messages != updates+1 || st.Resumes != 1 || st.FullResyncs != 0 {
		t.Fatalf("want one resume of %d messages: %+v", updates+1, st)
	}
	t.Logf("resumed %d updates in %d bytes, %v after reconnecting began", updates, st.LastJoin.Bytes, st.LastJoin.Took.Round(time.Millisecond))
}

// TestResumeFull is issue 14 behaviour 3 against the fake server: outside
// the retained history, with another history id, or with a client
// sequence above the server's, the reply is a whole snapshot that replaces
// the map (deleted keys disappear) and one event says so.
func TestResumeFull(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, reason string
		event        EventType
		change       func(s *fakeState)
	}{
		{"compacted", "compacted", EventFull, func(s *fakeState) {
			for i := range 5 {
				s.publish(fmt.Sprintf("k%06d", i), "", false)
				s.publish(fmt.Sprintf("new%d", i), "n", false)
			}
			s.retain(s.seq) // only the last update is retained
		}},
		{"history", "history", EventReset, func(s *fakeState) {
			// A wiped server with a map of its own, lower sequence.
			s.history, s.kv, s.seq, s.log = histB, map[string]string{}, 0, nil
			for i := range 3 {
				s.publish(fmt.Sprintf("other%d", i), "o", false)
			}
		}},
		{"ahead", "ahead", EventFull, func(s *fakeState) {
			// The same history, behind the client (a lagging node).
			s.seq -= 10
			for i := range 10 {
				delete(s.kv, fmt.Sprintf("k%06d", i))
			}
			s.log = nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := startFake(t)
			fill(f, histA, 50)
			px := startProxy(t, f.port)
			c := dial(t, Options{Endpoints: []string{px.endpoint()}, HeartbeatTimeout: 2 * time.Second, JoinTimeout: 5 * time.Second})
			events := c.Watch(t.Context())
			f.waitSame(t, c)
			before := c.Snapshot().Map()

			px.cut()
			waitFor(t, 15*time.Second, "the client to notice the outage", func() bool { return !c.Synced() })
			f.do(tc.change)
			px.restore()
			got := rejoinEvents(t, events, 30*time.Second)
			f.waitSame(t, c)
			want, _ := f.state()

			marks := 0
			for _, ev := range got {
				switch ev.Type {
				case EventFull, EventReset:
					marks++
					if ev.Type != tc.event {
						t.Fatalf("got %v, want %v: %s", ev.Type, tc.event, eventSummary(got))
					}
				case EventResumed:
					t.Fatalf("resumed: %s", eventSummary(got))
				}
			}
			if marks != 1 || got[0].Type != tc.event {
				t.Fatalf("want exactly one %v first: %s", tc.event, eventSummary(got))
			}
			for k := range before {
				if _, ok := want[k]; !ok {
					if _, held := c.Get(k); held {
						t.Fatalf("%s was deleted on the server but survived the full re-sync", k)
					}
				}
			}
			st := c.Stats()
			reasons := st.FullReasons[tc.reason]
			if tc.name == "history" {
				// A HUGZ of the new history may come before the reply: the
				// client then asks plainly (other_history).
				reasons += st.FullReasons[whyOtherHistory]
			}
			if st.FullResyncs != 1 || reasons != 1 || st.Resumes != 0 || st.LastJoin.Kind != joinFull {
				t.Fatalf("want one full re-sync (%s): %+v", tc.reason, st)
			}
			if tc.event == EventFull {
				// The differences follow the marker; deletes carry the
				// re-join's sequence.
				applied := maps.Clone(before)
				for _, ev := range got[1 : len(got)-1] {
					switch ev.Type {
					case EventDelete:
						if ev.Seq != got[0].Seq {
							t.Fatalf("delete at %d, want the re-join's %d", ev.Seq, got[0].Seq)
						}
						delete(applied, ev.Key)
					case EventUpdate:
						applied[ev.Key] = string(ev.Value)
					}
				}
				if !maps.Equal(applied, want) {
					t.Fatalf("the old map plus the events differs from the server:\n%s", diffMaps(applied, want))
				}
			}
		})
	}
}

// TestResumeSynced is issue 11's "Synced() means synced" for resumes: not
// synced while a resume is in progress (the reply is held) nor once a gap
// was detected; and a resume nobody watches builds no per-key events.
func TestResumeSynced(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	fill(f, histA, 100)
	built := make(chan int, 8)
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second, JoinTimeout: 5 * time.Second,
		hooks: &testHooks{joinEvents: func(n int) { built <- n }}})
	f.waitSame(t, c)
	joinBuilt(t, built)
	// A gap: update 102 is lost, 103 shows it. The resume request is held
	// until the test releases it.
	f.do(func(s *fakeState) {
		s.hold = time.Hour
		s.publish("k000001", "a", false)
		s.publish("k000002", "lost", true)
		s.publish("k000003", "c", false)
	})
	waitFor(t, 5*time.Second, "the gap detected", func() bool { return c.Stats().Gaps == 1 })
	waitFor(t, 10*time.Second, "the resume request held", func() bool {
		var held bool
		f.do(func(s *fakeState) { held = s.heldReq != nil })
		return held
	})
	for range 10 {
		if c.Synced() || c.Snapshot().Synced || c.Stats().Synced {
			t.Fatal("synced while the resume is in progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.do(func(s *fakeState) { s.heldUntil = time.Now() })
	if n := joinBuilt(t, built); n != 1 {
		t.Fatalf("a resume without watchers built %d events, want only resync-done", n)
	}
	f.waitSame(t, c)
	if v, _ := c.Get("k000002"); string(v) != "lost" {
		t.Fatalf("the lost update did not arrive with the resume: %q", v)
	}
	if st := c.Stats(); st.Resumes != 1 || st.LastJoin.Messages != 3 {
		t.Fatalf("want one resume of the 2 updates after the gap and KTHXBAI: %+v", st)
	}
}

// TestResumeTailLoss: the tail of a burst is lost and a HUGZ says so; the
// re-join resumes with just those updates.
func TestResumeTailLoss(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	fill(f, histA, 20)
	f.do(func(s *fakeState) { s.hugzSeqProp = true })
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second})
	events := c.Watch(t.Context())
	f.waitSame(t, c)
	var want []change
	f.do(func(s *fakeState) {
		for i := range 3 {
			s.publish(fmt.Sprintf("tail%d", i), "t", true)
			want = append(want, change{fmt.Sprintf("tail%d", i), "t", s.seq})
		}
	})
	checkDelta(t, rejoinEvents(t, events, 15*time.Second), want)
	f.waitSame(t, c)
}

// TestResumeFailover: the client moves to an endpoint it never heard from
// that holds the same history; it waits for that server's first HUGZ,
// learns that it can resume, and resumes there. A server that sends no
// HUGZ in time gets a plain request (a whole snapshot).
func TestResumeFailover(t *testing.T) {
	t.Parallel()
	for _, hugz := range []bool{true, false} {
		t.Run(fmt.Sprintf("hugz=%v", hugz), func(t *testing.T) {
			t.Parallel()
			a, b := startFake(t), startFake(t)
			fill(a, histA, 200)
			fill(b, histA, 200)
			b.do(func(s *fakeState) { s.hugz = hugz })
			px := startProxy(t, a.port)
			c := dial(t, Options{Endpoints: []string{px.endpoint(), b.endpoint()}, HeartbeatTimeout: time.Second, AdvertWait: 400 * time.Millisecond})
			events := c.Watch(t.Context())
			a.waitSame(t, c)
			px.cut()
			missed(a, 30, 200)
			want := missed(b, 30, 200)
			got := rejoinEvents(t, events, 30*time.Second)
			b.waitSame(t, c)
			if got[0].Type != EventServerSwitched {
				t.Fatalf("events: %s, want server-switched first", eventSummary(got))
			}
			var reqs []string
			b.do(func(s *fakeState) { reqs = s.resumeReqs })
			st := c.Stats()
			if hugz {
				checkDelta(t, got[1:], want)
				if len(reqs) != 1 || st.Resumes != 1 {
					t.Fatalf("resume requests %q, stats %+v: want one resume at the new endpoint", reqs, st)
				}
				return
			}
			if len(reqs) != 0 || st.FullReasons[whyNotOffered] != 1 || got[1].Type != EventFull {
				t.Fatalf("resume requests %q, events %s, stats %+v: want a plain request and one full", reqs, eventSummary(got), st)
			}
		})
	}
}

// TestResumeSince: Options.Since makes the first join ask for the updates
// after Since: a delta when the server retains them, else the whole map.
func TestResumeSince(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	fill(f, histA, 50)
	_, since := f.state()
	want := missed(f, 20, 50)
	c, events, err := NewWatching(t.Context(), Options{Endpoints: []string{f.endpoint()}, Since: since, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var got []Event
	for ev := range events {
		got = append(got, ev)
		if ev.Type == EventResyncDone {
			break
		}
	}
	checkDelta(t, got, want)
	if got[0].Since != since {
		t.Fatalf("resumed after %d, want %d", got[0].Since, since)
	}
	if n := c.Snapshot().Len(); n > 20 {
		t.Fatalf("holds %d keys, want only those changed after %d", n, since)
	}

	// Outside the retained history: the whole map, every key an update.
	f.do(func(s *fakeState) { s.retain(s.seq) })
	c2, events2, err := NewWatching(t.Context(), Options{Endpoints: []string{f.endpoint()}, Since: since, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	got = got[:0]
	for ev := range events2 {
		got = append(got, ev)
		if ev.Type == EventResyncDone {
			break
		}
	}
	kv, _ := f.state()
	if got[0].Type != EventFull || got[0].Reason != "compacted" || len(got) != len(kv)+2 {
		t.Fatalf("events %s, want full (compacted), %d updates, resync-done", eventSummary(got), len(kv))
	}
	f.waitSame(t, c2)
}

// TestNoResumeUnadvertised: a server that does not advertise resume (the
// fake with resume off, as the Guide's servers) is never sent the
// three-frame request; its re-joins are whole snapshots (not_offered).
func TestNoResumeUnadvertised(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	f.do(func(s *fakeState) {
		s.history = histA
		for i := range 10 {
			s.publish(fmt.Sprintf("k%d", i), "v", false)
		}
	})
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second})
	f.waitSame(t, c)
	f.do(func(s *fakeState) {
		s.publish("k1", "lost", true)
		s.publish("k2", "x", false)
	})
	waitFor(t, 5*time.Second, "the re-join", func() bool { return c.Stats().Joins == 2 })
	f.waitSame(t, c)
	var stray, reqs int
	f.do(func(s *fakeState) { stray, reqs = s.strayResume, s.requests })
	if stray != 0 || reqs != 2 {
		t.Fatalf("%d resume requests of %d, want none", stray, reqs)
	}
	if st := c.Stats(); st.FullReasons[whyNotOffered] != 1 || st.Resumes != 0 {
		t.Fatalf("%+v", st)
	}
	// Resume advertised but NoResume set: plain too.
	c.Close()
	f.do(func(s *fakeState) { s.resume = true })
	c2 := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second, NoResume: true})
	f.waitSame(t, c2)
	f.do(func(s *fakeState) {
		s.publish("k3", "lost", true)
		s.publish("k4", "x", false)
	})
	waitFor(t, 5*time.Second, "the re-join", func() bool { return c2.Stats().Joins == 2 })
	var resumes []string
	f.do(func(s *fakeState) { resumes = s.resumeReqs })
	if st := c2.Stats(); len(resumes) != 0 || st.FullReasons[whyDisabled] != 1 {
		t.Fatalf("NoResume: resume requests %q, %+v", resumes, st)
	}
}

// joinBuilt waits for the next completed join's event count (testHooks).
func joinBuilt(t testing.TB, built <-chan int) int {
	t.Helper()
	select {
	case n := <-built:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no join completed within 10s")
		return 0
	}
}

// TestResumeUnusableReply: a delta that does not hold together (here: a
// since= other than asked) is not applied; the client asks the same
// endpoint again plainly, counts the bad reply, ends equal to the server,
// and never sends that endpoint a resume request again.
func TestResumeUnusableReply(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	fill(f, histA, 30)
	f.do(func(s *fakeState) { s.badSince = true })
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second})
	f.waitSame(t, c)
	gap := func() {
		f.do(func(s *fakeState) {
			s.publish("k000001", fmt.Sprint(s.seq), true)
			s.publish("k000002", fmt.Sprint(s.seq), false)
		})
	}
	gap()
	waitFor(t, 10*time.Second, "the re-join", func() bool { return c.Stats().Joins == 2 })
	f.waitSame(t, c)
	st := c.Stats()
	if st.FullReasons[whyBadDelta] != 1 || st.Resumes != 0 || st.Drops[reasonResumeReply] != 1 {
		t.Fatalf("want one bad delta, then a full: %+v", st)
	}
	var reqs []string
	f.do(func(s *fakeState) { reqs = s.resumeReqs })
	gap()
	waitFor(t, 10*time.Second, "the second re-join", func() bool { return c.Stats().Joins == 3 })
	f.waitSame(t, c)
	var after []string
	f.do(func(s *fakeState) { after = s.resumeReqs })
	if len(reqs) != 1 || len(after) != 1 {
		t.Fatalf("resume requests %q then %q: want one, never again", reqs, after)
	}
}

// TestResumeNotAnswered: the endpoint advertised resume, then (restarted
// without it) ignores resume requests and stops advertising; the client's
// pending request is asked again plainly on the first HUGZ that says so,
// instead of waiting for ever on a server that is alive.
func TestResumeNotAnswered(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	fill(f, histA, 30)
	px := startProxy(t, f.port)
	c := dial(t, Options{Endpoints: []string{px.endpoint()}, HeartbeatTimeout: 2 * time.Second, JoinTimeout: 5 * time.Second})
	events := c.Watch(t.Context())
	f.waitSame(t, c)
	px.cut()
	waitFor(t, 15*time.Second, "the client to notice the outage", func() bool { return !c.Synced() })
	f.do(func(s *fakeState) {
		s.resume, s.dropResume = false, true
		s.publish("k000003", "changed", false)
	})
	px.restore()
	// Without the plain retry, HUGZ would keep the unanswered request
	// alive (a busy server is not failed over) and this would time out.
	got := rejoinEvents(t, events, 30*time.Second)
	f.waitSame(t, c)
	if got[0].Type != EventFull || got[0].Reason != whyNotOffered {
		t.Fatalf("events %s, want full (not_offered)", eventSummary(got))
	}
}
