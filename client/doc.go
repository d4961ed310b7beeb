// Package client is clonekv's Go client: it joins a clone server (the
// ZeroMQ Guide's Clone pattern: Model Five and Six wire protocol), keeps a copy of
// the map under a subtree, follows every change, writes changes, and never
// silently diverges from the server: at any moment its map either matches
// the server at Seq, or a re-join is in progress and watchers have been told
// (EventResyncStarted).
//
//	c, err := client.Dial(ctx, client.Options{Endpoints: []string{"tcp://127.0.0.1:5556"}, Subtree: "/app/"})
//	v, ok := c.Get("/app/config")
//	err = c.Set("/app/config", []byte("v2"), 30*time.Second)
//	for ev := range c.Watch(ctx) { ... }
//
// # Joining
//
// Per endpoint the client connects a SUB to P+1 (subscribed before it asks
// for anything), waits until that connection's handshake completes, then
// sends ICANHAZ? + subtree on a fresh DEALER to P, applies the KVSYNCs to a
// new map until KTHXBAI, then applies the updates the SUB buffered meanwhile
// whose sequence is above the KTHXBAI sequence, and swaps the new map in.
// A re-join asks for only what it missed when the server can resume (see
// "Resume" below).
//
// # When the client re-joins
//
//   - A gap (an update was lost, e.g. past the PUB or SUB high-water mark):
//     a fresh snapshot from the same server; the SUB is kept, as it is
//     connected and subscribed and its stream simply goes on.
//   - The sequence goes backwards (the server restarted with less state), or
//     the SUB's connection drops (seen through a socket monitor; a restart
//     always drops it): new sockets, the same endpoint first.
//   - Silence: nothing, not even a HUGZ, for Options.HeartbeatTimeout, from
//     a server that has sent at least one HUGZ on this connection; or an
//     endpoint that refuses the connection, fails the handshake or stalls a
//     snapshot for Options.JoinTimeout: new sockets on the next endpoint,
//     round robin (the Guide's Model Six). After every endpoint failed in a
//     row the client waits 50ms, doubling up to 1s, before the next round.
//     A server that never sent a HUGZ (the Guide's Model Five, clonesrv
//     --hugz 0) is not timed out for silence: idle is not dead. Its death
//     shows as the connection dropping (TCP keepalive finds a vanished
//     host; Options.ZMTPHeartbeat, off by default, also finds a hung or
//     stopped one).
//   - The server says its history changed (a HUGZ whose history property
//     differs from the map's): a re-join of the same server.
//
// # Heartbeats: what each form of HUGZ tells the client
//
// A HUGZ is recognised by its key, whatever its sequence frame, and is never
// applied and never taken for a restart (its sequence is not compared with
// the updates' to detect one). What the client concludes:
//
//   - Sequence frame 0, no properties (RFC 12, the seed, clonekv's server
//     before it had history ids): only that the server is alive.
//   - Property seq=N (clonekv's server): the server's sequence. Following
//     everything (FilterLocal), N above the last sequence applied means
//     updates were published that never arrived: the tail of a burst was
//     lost, and no later update may reveal it. The client re-joins when the
//     next HUGZ still finds it below the first one's N (a server may read
//     its sequence a moment before its publisher sent the last updates), so
//     within two heartbeat intervals of the loss.
//   - Sequence frame N > 0 (the Guide's Model Six servers send their
//     current sequence there): the same conclusion, the same way.
//   - Property history=ID: compared with the history of the map held.
//
// With FilterServer a HUGZ sequence above the client's is expected (other
// subtrees) and means nothing.
//
// # History ids
//
// clonekv's server puts history=ID (made when its data directory was
// created) on KTHXBAI and HUGZ. The client keeps the id its map came from
// (Stats.History). A re-join that finds the same id is the same map later:
// watchers get only the true differences. A different id is another map
// (wiped, restored elsewhere): watchers get one EventReset, then every key
// of the new map as EventUpdate, then EventResyncDone; no deletes for the
// old keys. A server that sends no id (older clonekv, the Guide's servers)
// is "unknown history": the differences are computed as always. Delete
// events after a re-join carry the re-join's sequence. A re-join with no
// watcher registered builds no events at all (no per-key event, whatever
// the size of the map).
//
// # Synced means synced
//
// Synced (and Stats.Synced, Snapshot.Synced) is true only while the map is
// the complete state at Seq: it turns false when a re-join starts (a
// detected gap, a HUGZ that proved the tail lost, a restart, a dropped
// connection, silence) and true again only once the re-join's reply and
// the buffered updates are all applied. During a resume the map moves
// forward batch by batch through states the server had, and Seq with it,
// but Synced stays false until the end.
//
// # Resume: only what was missed
//
// A clonekv server that keeps a window of recent updates advertises it
// (resume=1 on its KTHXBAI and HUGZ, next to history=ID). The client
// remembers, per endpoint, the last advertisement it saw; it outlives the
// session, so a reconnect to the same endpoint (a dropped connection, a
// restarted server) uses it at once. A re-join (reconnect, failover,
// detected gap, HUGZ tail loss) then sends the three-frame request
// ICANHAZ?, subtree, "history=ID\nsince=SEQ\n" (SEQ: the last sequence
// applied) when that endpoint advertised resume for the history of the map
// held; otherwise the plain two-frame ICANHAZ?, which is all the Guide's
// servers ever get (they never advertise; a C server would misparse a
// third frame). A re-join to an endpoint never heard from (a failover to
// another node) first waits for its first HUGZ on the subscriber, which it
// connects before asking anyway, for at most Options.AdvertWait (about one
// heartbeat interval plus a margin by default), then decides; no HUGZ in
// time means a plain request. Options.NoResume turns it all off, and
// Client.Resync always asks plainly.
//
// The reply cannot be told from a snapshot before its KTHXBAI, so the
// client reads it as a snapshot into a new map and also keeps the messages
// while they can be a delta (sequences increasing above since; a snapshot's
// KVSYNCs soon show they are not). At the KTHXBAI:
//
//   - resume=delta: the kept messages are the updates after since, in
//     order: they are applied to the map held as ordinary updates, in
//     batches under the write lock (each batch ends at a state the server
//     had), then the subscriber's buffered updates above the KTHXBAI's
//     sequence. Watchers get EventResumed, then exactly those updates and
//     deletes, each once, in order, with their own sequences, then
//     EventResyncDone. A delta that does not hold together (another since
//     or history than asked, sequences out of order) is not used: the
//     client asks the same endpoint again plainly and never resumes from it
//     again.
//   - resume=full (history, compacted, ahead, bad_request, disabled), no
//     resume property, or a plain request: the new map replaces the one
//     held (keys it lacks are gone). Watchers get EventFull with the reason
//     and the differences, or EventReset when the history changed.
//   - Refused: as for a plain request (below); the retry resumes again if
//     the endpoint still can.
//
// A resume request that nothing has answered yet is asked again plainly
// when a HUGZ shows the endpoint can no longer resume it (a server
// restarted without its window, or with another history). Stats.Resumes,
// FullResyncs and FullReasons count the outcomes; Stats.LastJoin gives the
// last join's kind, messages, bytes and time; RejoinMessages and
// RejoinBytes total the re-joins.
//
// # Refused snapshots
//
// A KTHXBAI with a refused=REASON property (sequence 0, no KVSYNC before
// it) is clonekv's server saying it will not stream a snapshot now (too many
// joins in flight, or it aborted a stalled one). It is not a snapshot: the
// client keeps its SUB, waits 100ms, doubling up to 2s, each wait with
// ±50% jitter so that a herd spreads out, and asks the same server again
// (Stats.Refused counts them). While it waits, or while a request is
// queued with nothing received yet, anything on the SUB (a HUGZ, an update)
// proves the server alive and extends the join deadline: a busy server is
// not failed over.
//
// # Writes to a PULL or a SUB collector
//
// Options.Collector says what the server collects on. CollectorPull (the
// default) writes on a PUSH. CollectorSub (RFC 12, Model Six, clonesrv
// --collector sub) writes on an XPUB: it sees the collector's subscription
// arrive and holds writes until then (a PUB drops what nobody subscribed
// to), and with XPUB_NODROP a full queue is ErrBackpressure, as with the
// PUSH. Either way the write is confirmed by its echo on the SUB.
//
// # Decode limits
//
// Messages from the server are checked against Options.MaxKey, MaxProps and
// MaxBody (64 KiB - 1, 64 KiB, 64 MiB by default). Anything that is not a
// valid Clone message, or is over a limit, is dropped, counted per reason
// (Stats.Drops) and logged at warn at most every 10s per reason; a join that
// fails because of them says "server sent N messages clonekv could not
// decode: <first reason>". An update over a limit still counts for its
// sequence (no gap, no re-join loop): a key over MaxKey is not stored, a
// value or properties over theirs make the key read as absent. Get and
// Snapshot.Get answer "not found" for a key longer than MaxKey without
// looking it up.
//
// # Gap detection and subtrees: a decision
//
// Sequence numbers are global across subtrees, so a client that receives
// only its subtree sees gaps whenever other subtrees change and cannot tell
// them from lost updates. Options.Filter therefore chooses:
//
//   - FilterLocal (the default): the SUB subscribes to everything and the
//     client drops keys outside the subtree itself. It sees every sequence,
//     so every loss is detected and repaired. The cost is bandwidth and CPU
//     for the other subtrees' updates.
//   - FilterServer: the SUB subscribes to the subtree and to "HUGZ" (a
//     subtree subscription alone would filter the heartbeats out). The
//     server sends only the subtree's updates, but a loss cannot be detected
//     from sequences; restarts (backwards sequence, dropped connection) and
//     silence still are. Use it when the subtree is a small part of a busy
//     map and the subscriber is known to keep up.
//
// With Subtree "" both are the same. clonecli's get, set, del and dump use
// FilterServer (they only need the snapshot); watch and demo use
// FilterLocal.
//
// # Reads during a re-join
//
// The map is kept in a copy-on-write kvmap.Map owned by one goroutine and
// guarded by a RWMutex: the owner takes the write lock only to apply one
// batch of updates (at most 1024) or to swap in a new map; Get holds the
// read lock for one lookup; Snapshot takes an O(1) copy-on-write View under
// the lock and is walked without any lock, so a slow reader never delays the
// socket owner (which would overflow the SUB and cause gaps). A View per
// batch, published through an atomic pointer, was the alternative; it makes
// the owner copy a B-tree path after every batch even when nobody reads,
// which a write-heavy follower would pay for nothing.
//
// A re-join builds the new map beside the old one: until it completes,
// Get, Snapshot and Seq answer from the last consistent map (Synced and
// Snapshot.Synced say false), Set and Delete still go to the server, and
// the SUB is drained into a buffer (bounded by Options.MaxPending) so
// nothing queues up in ZeroMQ. When it completes, watchers receive the
// differences between the old and new map as update and delete events,
// then EventResyncDone.
//
// # Events: never blocking, never silent
//
// Each watcher has a buffered channel (Options.EventBuffer). The owner
// goroutine never waits for a watcher: it is the one goroutine reading the
// sockets, and blocking it on a slow consumer would overflow the SUB and
// turn one slow watcher into lost updates for the whole client. When a
// watcher's channel is full, its events are dropped and counted, and as
// soon as there is room the watcher receives an EventLost with the count
// before anything newer, so a watcher is never silently behind: on
// EventLost, re-read the map with Snapshot.
//
// # Writes
//
// Set and Delete send a KVSET with a fresh random (version 4) UUID on the
// PUSH (or XPUB) and return once ZeroMQ has queued it (ErrBackpressure if the queue to
// the server is full, ErrNotConnected between sessions). The local map
// changes only when the server publishes the update; SetWait and DeleteWait
// wait for that, matching the echo by UUID, and return its sequence.
//
// # Goroutines and sockets
//
// One owner goroutine creates, uses and closes every socket of the client
// (DEALER, SUB, PUSH or XPUB, the SUB's monitor PAIR, the wake pipe's PULL), in the
// client's own ZeroMQ context. API calls reach it through a channel; a
// second goroutine owns the sending end of an inproc wake pipe so that the
// owner's poll returns at once. Close stops both and waits for them.
package client
