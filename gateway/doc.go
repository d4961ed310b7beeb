// Package gateway serves a clonekv map over HTTP: a versioned JSON API
// under /v1/, a server-sent-events watch stream, and a live web inspector
// page under /ui/. clonesrv mounts it on its --http listener.
//
// # A client of the store like any other
//
// The gateway owns one clonekv Go client (package client) that follows the
// whole map of a server, connected to the server's own ports (on loopback
// when the server listens on every interface). Reads answer from that
// client's copy-on-write Snapshot, so a GET is the map at one sequence;
// writes are the client's confirmed writes (SetWait, DeleteWait), so they go
// through the collector and the store exactly as a ZeroMQ client's do, and
// the HTTP answer carries the sequence the server published them at. An
// in-process handler fed by the store's committed stream was the
// alternative: it would see updates a little earlier, but it would have to
// rebuild a consistent snapshot next to the store (the client already does
// that, with its resync rules), and writes would still need a way into the
// collector, which the client is. Going through the wire protocol also
// means the gateway works unchanged against a remote server.
//
// # Watch fan-out
//
// One hub goroutine reads the client's single Watch channel and hands each
// update to every SSE watcher whose prefix matches, without ever blocking:
// each watcher has a bounded queue, and a watcher whose queue is full is cut
// off (it gets a final "closed" event saying why, if its connection takes
// it within a few seconds). A slow reader therefore costs the hub one
// failed channel send, and never slows the client, the server or other
// watchers.
//
// The hub also keeps a bounded replay log of the most recent updates of the
// whole map since its last reset (in events and bytes). A reconnecting
// watcher whose Last-Event-ID names the hub's current stream and a sequence
// the log still covers receives exactly the updates after it; any other
// reconnect gets a reset and a fresh snapshot. The log can prove that
// nothing was missed because the client follows every sequence (FilterLocal
// with subtree ""), and the hub resets (clearing the log and, while the
// server has no history id, choosing a new stream id) whenever the client
// re-joins or the hub's own watch channel overflows.
package gateway
