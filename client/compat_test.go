package client

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/guideserver"
	"github.com/clonekv/clonekv/kvmsg"
)

// TestGuideServers is issue 10's behaviour 1 for the Go client: against a
// server that behaves as the Guide's Go Model Five server (properties "\n",
// no HUGZ, absolute ttl in KVSYNC) and as its Model Six primary (SUB
// collector, HUGZ carrying the current sequence), joins succeed, writes are
// confirmed, a watcher sees them, ttl keys expire, a re-join reads the
// absolute ttl as what remains of it, and an idle client never re-joins.
func TestGuideServers(t *testing.T) {
	t.Parallel()
	for _, model := range []guideserver.Model{guideserver.ModelFive, guideserver.ModelSix} {
		t.Run(model.String(), func(t *testing.T) {
			t.Parallel()
			srv, err := guideserver.Start(guideserver.Config{Model: model})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			coll := CollectorPull
			if model == guideserver.ModelSix {
				coll = CollectorSub
			}
			// The Guide's HUGZ come every second.
			c := dial(t, Options{Endpoints: []string{srv.Endpoint()}, Subtree: "/g/", Collector: coll, HeartbeatTimeout: 2500 * time.Millisecond})
			events := c.Watch(t.Context())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			seq, err := c.SetWait(ctx, "/g/a", []byte("1"), 0)
			if err != nil {
				t.Fatalf("SetWait: %v", err)
			}
			if ev := nextEvent(t, events, EventUpdate, 5*time.Second); ev.Key != "/g/a" || ev.Seq != seq {
				t.Fatalf("event %+v, want /g/a at %d", ev, seq)
			}
			if v, ok := c.Get("/g/a"); !ok || string(v) != "1" {
				t.Fatalf("Get = %q, %v", v, ok)
			}
			if _, err := c.SetWait(ctx, "/g/ttl", []byte("x"), 2*time.Second); err != nil {
				t.Fatalf("SetWait with ttl: %v", err)
			}
			// A second client joins while the key lives: its KVSYNC carries
			// the Go server's absolute expiry, read as a remaining ttl.
			c2 := dial(t, Options{Endpoints: []string{srv.Endpoint()}, Subtree: "/g/", Collector: coll, HeartbeatTimeout: 2500 * time.Millisecond})
			ev2 := c2.Watch(t.Context())
			if err := c2.Resync(); err != nil {
				t.Fatal(err)
			}
			nextEvent(t, ev2, EventResyncDone, 5*time.Second)
			if v, ok := c2.Get("/g/ttl"); !ok || string(v) != "x" {
				t.Fatalf("second client: /g/ttl = %q, %v", v, ok)
			}
			// The delete arrives when the server's ttl flush runs.
			deadline := time.After(10 * time.Second)
			for {
				var ev Event
				select {
				case ev = <-events:
				case <-deadline:
					t.Fatal("no delete of /g/ttl within 10s")
				}
				if ev.Type == EventDelete && ev.Key == "/g/ttl" {
					break
				}
			}
			if _, err := c.DeleteWait(ctx, "/g/a"); err != nil {
				t.Fatalf("DeleteWait: %v", err)
			}
			// Idle: longer than the heartbeat timeout, without a re-join.
			before := c.Stats()
			time.Sleep(4 * time.Second)
			st := c.Stats()
			if st.Resyncs != 0 || st.Joins != 1 || st.Timeouts != 0 || st.Malformed != 0 || !st.Synced {
				t.Fatalf("idle client re-joined or dropped input: %+v (before idling %+v)", st, before)
			}
			if model == guideserver.ModelSix && st.Heartbeats == 0 {
				t.Fatalf("no HUGZ counted from Model Six: %+v", st)
			}
			if srv.Stats().Dropped != 0 {
				t.Fatalf("the Guide server would have stopped: %+v", srv.Stats())
			}
		})
	}
}

// TestHugzTailLoss is issue 11's behaviour 4: a client following everything
// that lost the last updates of a burst, with nothing after them, re-joins
// within two heartbeat intervals, told by the HUGZ's sequence (clonekv's seq
// property, or the Guide Model Six's sequence frame).
func TestHugzTailLoss(t *testing.T) {
	t.Parallel()
	for _, form := range []string{"seq-property", "seq-frame"} {
		t.Run(form, func(t *testing.T) {
			t.Parallel()
			const every = 200 * time.Millisecond
			f := startFake(t)
			f.do(func(s *fakeState) {
				s.hugzEvery = every
				s.hugzSeqProp = form == "seq-property"
				s.hugzSeqFrame = form == "seq-frame"
				s.history = "0123456789abcdef0123456789abcdef"
				s.publish("a", "1", false)
			})
			c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second})
			events := c.Watch(t.Context())
			f.waitSame(t, c)
			time.Sleep(3 * every) // HUGZ at the client's sequence: no re-join
			if st := c.Stats(); st.Resyncs != 0 || st.Heartbeats == 0 {
				t.Fatalf("HUGZ at the client's sequence caused a re-join, or none heard: %+v", st)
			}
			var hb0 int64
			f.do(func(s *fakeState) {
				s.publish("b", "2", false)
				s.publish("c", "lost", true) // the tail of the burst, lost
				s.publish("d", "lost", true)
				hb0 = c.Stats().Heartbeats
			})
			ev := nextEvent(t, events, EventResyncStarted, 20*every)
			// Two HUGZ after the loss; the count may also hold a HUGZ or two
			// sent before it and still queued when hb0 was read.
			if n := c.Stats().Heartbeats - hb0; n > 4 {
				t.Fatalf("re-joined after %d HUGZ, want within two heartbeat intervals (%s)", n, ev.Reason)
			}
			if !strings.Contains(ev.Reason, "HUGZ") {
				t.Fatalf("reason %q, want the HUGZ's sequence", ev.Reason)
			}
			f.waitSame(t, c)
			if st := c.Stats(); st.Restarts != 0 {
				t.Fatalf("a HUGZ counted as a restart: %+v", st)
			}
		})
	}
}

// TestHistoryID is issue 12's client part: the same history id gives only
// the true changes on a re-join; another id gives one reset event and then
// the new map, never a delete per old key. Issue 11 item 7: a delete event
// after a re-join carries the re-join's sequence, not the old entry's.
func TestHistoryID(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	const h1, h2 = "11111111111111111111111111111111", "22222222222222222222222222222222"
	f.do(func(s *fakeState) {
		s.history = h1
		for i := range 5 {
			s.publish(fmt.Sprintf("k%d", i), "v", false)
		}
	})
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second})
	f.waitSame(t, c)
	if c.Stats().History != h1 {
		t.Fatalf("history %q, want %q", c.Stats().History, h1)
	}
	events := c.Watch(t.Context())

	// Same history, later: k0 deleted and k1 changed while the client
	// missed it; the re-join yields just those two.
	f.do(func(s *fakeState) {
		delete(s.kv, "k0")
		s.seq++
		s.publish("k1", "new", true)
	})
	if err := c.Resync(); err != nil {
		t.Fatal(err)
	}
	var got []Event
	for ev := range events {
		if ev.Type == EventResyncDone {
			got = append(got, ev)
			break
		}
		if ev.Type != EventResyncStarted {
			got = append(got, ev)
		}
	}
	done := got[len(got)-1]
	if len(got) != 4 || got[0].Type != EventFull || got[0].Reason != whyRequested {
		t.Fatalf("same history: events %+v, want full (requested), the delete of k0, the update of k1, resync-done", got)
	}
	got = got[1:]
	for _, ev := range got[:2] {
		if ev.Seq < done.Seq && ev.Type == EventDelete {
			t.Fatalf("delete event at %d, below the re-join's %d: %+v", ev.Seq, done.Seq, ev)
		}
	}
	if got[0].Type != EventDelete || got[0].Key != "k0" || got[1].Type != EventUpdate || got[1].Key != "k1" {
		t.Fatalf("same history: %+v", got)
	}

	// Another history: a wiped server with one key of its own, at a lower
	// sequence, announced by its HUGZ.
	f.do(func(s *fakeState) {
		s.history, s.kv, s.seq = h2, map[string]string{}, 0
		s.kv["fresh"] = "1"
		s.seq = 1
	})
	got = got[:0]
	for ev := range events {
		got = append(got, ev)
		if ev.Type == EventResyncDone {
			break
		}
	}
	var reset, deletes, updates int
	for _, ev := range got {
		switch ev.Type {
		case EventReset:
			reset++
		case EventDelete:
			deletes++
		case EventUpdate:
			updates++
		}
	}
	if reset != 1 || deletes != 0 || updates != 1 {
		t.Fatalf("new history: events %+v, want one reset and the new map's one key, no deletes", got)
	}
	f.waitSame(t, c)
	if st := c.Stats(); st.History != h2 || st.Resets != 1 {
		t.Fatalf("after the reset: %+v", st)
	}
}

// TestRefusedSnapshot: a KTHXBAI marked refused is not a snapshot; the
// client backs off and asks again, and a server that queues the request
// but sends HUGZ is not timed out even past JoinTimeout.
func TestRefusedSnapshot(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	f.do(func(s *fakeState) {
		s.publish("a", "1", false)
		s.refuse = 4
	})
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, JoinTimeout: time.Second, hooks: &testHooks{retryBackoff: 20 * time.Millisecond}})
	f.waitSame(t, c)
	st := c.Stats()
	if st.Refused != 4 || st.Timeouts != 0 || st.Keys != 1 {
		t.Fatalf("after 4 refusals: %+v, want 4 refused, no timeout, the map", st)
	}
	// Queued: the answer comes 3 join timeouts later; HUGZ flow meanwhile.
	f.do(func(s *fakeState) {
		s.hold = 3 * time.Second
		s.publish("b", "2", true)
	})
	if err := c.Resync(); err != nil {
		t.Fatal(err)
	}
	f.waitSame(t, c)
	if st := c.Stats(); st.Timeouts != 0 || st.Joins != 2 {
		t.Fatalf("a queued joiner was timed out while the server was alive: %+v", st)
	}
}

// TestLongKeys is issue 11's behaviour 6 on the client: a 70,000-byte key
// is never found (not another key's value), and a server message with a key
// over the client's limit is dropped and counted, without a re-join loop.
func TestLongKeys(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	f.do(func(s *fakeState) {
		s.publish("ab", "secret", false)
		s.publish("/app/secret", "s3", false)
	})
	c := dial(t, Options{Endpoints: []string{f.endpoint()}})
	f.waitSame(t, c)
	for _, k := range []string{"ab" + strings.Repeat("Q", 70_000-2), "ab" + strings.Repeat("Q", 65_536), "/app/secret" + strings.Repeat("x", 65_536)} {
		if v, ok := c.Get(k); ok {
			t.Fatalf("Get(%d-byte key) = %q", len(k), v)
		}
		if v, ok := c.Snapshot().Get(k); ok {
			t.Fatalf("Snapshot().Get(%d-byte key) = %q", len(k), v)
		}
	}
	f.do(func(s *fakeState) {
		s.publishRaw(kvmsg.Msg{Key: []byte("ab" + strings.Repeat("Q", 70_000)), Body: []byte("big")})
		s.publish("after", "1", false)
	})
	f.waitSame(t, c)
	st := c.Stats()
	if st.Drops["key_too_long"] != 1 || st.Resyncs != 0 {
		t.Fatalf("oversized key: %+v, want one key_too_long drop and no re-join", st)
	}
	if v, _ := c.Get("ab"); string(v) != "secret" {
		t.Fatalf("ab = %q after the oversized key", v)
	}
}

// TestMalformedJoinSaysSo: a join that fails because the replies could not
// be decoded says so, with the first reason.
func TestMalformedJoinSaysSo(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	f.do(func(s *fakeState) { s.garbage = true })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := Dial(ctx, Options{Endpoints: []string{f.endpoint()}, JoinTimeout: 300 * time.Millisecond, Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "server sent 6 messages clonekv could not decode") || !strings.Contains(err.Error(), "property line") {
		t.Fatalf("Dial error %v, want the count and the first reason", err)
	}
}

// TestRejoinWithoutWatcherBuildsNoEvents is issue 11 item 3's client part:
// a re-join nobody watches builds no per-key events; with a watcher it
// builds one per changed key.
func TestRejoinWithoutWatcherBuildsNoEvents(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	f.do(func(s *fakeState) {
		for i := range 500 {
			s.publish(fmt.Sprintf("k%03d", i), "v", false)
		}
	})
	built := make(chan int, 8)
	c := dial(t, Options{Endpoints: []string{f.endpoint()}, HeartbeatTimeout: 2 * time.Second,
		hooks: &testHooks{joinEvents: func(n int) { built <- n }}})
	f.waitSame(t, c)
	<-built                   // the first join
	f.do(func(s *fakeState) { // the whole map changes behind the client's back
		for k := range s.kv {
			s.kv[k] = "changed"
		}
		s.seq++
	})
	if err := c.Resync(); err != nil {
		t.Fatal(err)
	}
	if n := <-built; n != 1 {
		t.Fatalf("a re-join without watchers built %d events, want only resync-done", n)
	}
	f.waitSame(t, c)
	events := c.Watch(t.Context())
	f.do(func(s *fakeState) {
		s.kv["k000"] = "again"
		s.seq++
	})
	if err := c.Resync(); err != nil {
		t.Fatal(err)
	}
	if n := <-built; n != 3 {
		t.Fatalf("a watched re-join built %d events, want full, the one change and resync-done", n)
	}
	nextEvent(t, events, EventResyncDone, 5*time.Second)
}

// TestGuideServersNeverResumed (issue 14 behaviour 4, client side): a
// clonekv client never sends a resume request to the Guide's servers,
// which never advertise it: after a server restart on the same port its
// re-join is the plain ICANHAZ? (a whole snapshot, reason not_offered).
func TestGuideServersNeverResumed(t *testing.T) {
	t.Parallel()
	for _, model := range []guideserver.Model{guideserver.ModelFive, guideserver.ModelSix} {
		t.Run(model.String(), func(t *testing.T) {
			t.Parallel()
			srv, err := guideserver.Start(guideserver.Config{Model: model, Tick: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			coll := CollectorPull
			if model == guideserver.ModelSix {
				coll = CollectorSub
			}
			c := dial(t, Options{Endpoints: []string{srv.Endpoint()}, Collector: coll, HeartbeatTimeout: time.Second})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.SetWait(ctx, "/g/a", []byte("1"), 0); err != nil {
				t.Fatalf("SetWait: %v", err)
			}
			port := srv.Port()
			srv.Close()
			var again *guideserver.Server
			waitFor(t, 10*time.Second, "the Guide server restarted on its port", func() bool {
				again, err = guideserver.Start(guideserver.Config{Model: model, Port: port, Tick: 100 * time.Millisecond})
				return err == nil
			})
			t.Cleanup(func() { again.Close() })
			waitFor(t, 15*time.Second, "the re-join", func() bool { st := c.Stats(); return st.Joins >= 2 && st.Synced })
			if _, err := c.SetWait(ctx, "/g/b", []byte("2"), 0); err != nil {
				t.Fatalf("SetWait after the restart: %v", err)
			}
			st := c.Stats()
			if n := srv.Stats().LongRequests + again.Stats().LongRequests; n != 0 {
				t.Fatalf("the Guide server got %d resume requests", n)
			}
			if st.Resumes != 0 || st.FullReasons[whyNotOffered] < 1 || again.Stats().Snapshots < 1 {
				t.Fatalf("want plain re-joins (not_offered): %+v", st)
			}
		})
	}
}

// TestStatsJoinCountsMatchTheMap: Stats never shows a re-join's map beside
// the join counts from before it (CI once read Synced at the new sequence
// with Joins still at the old count). Every re-join here raises the
// sequence by one and only a join can deliver it, so Joins must keep pace
// with Seq, and LastJoin reach it, in every Stats a reader takes while the
// re-joins run.
func TestStatsJoinCountsMatchTheMap(t *testing.T) {
	t.Parallel()
	f := startFake(t)
	f.do(func(s *fakeState) { s.publish("k", "0", false) })
	c := dial(t, Options{Endpoints: []string{f.endpoint()}})
	f.waitSame(t, c)
	stop := make(chan struct{})
	bad := make(chan Stats, 1)
	go func() {
		for {
			select {
			case <-stop:
				close(bad)
				return
			default:
			}
			if st := c.Stats(); st.Synced && (st.Joins < st.Seq || st.LastJoin.Seq < st.Seq) {
				bad <- st
				close(bad)
				return
			}
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for i := 1; i <= 200 && time.Now().Before(deadline); i++ {
		f.do(func(s *fakeState) { s.publish("k", fmt.Sprint(i), true) })
		if err := c.Resync(); err != nil {
			t.Fatal(err)
		}
		f.waitSame(t, c)
	}
	close(stop)
	if st, ok := <-bad; ok {
		t.Fatalf("Stats showed the map at %d after %d joins: %+v", st.Seq, st.Joins, st)
	}
}
