// Package baseline is a Go rendering of the seed server, the Guide's Clone
// Model Five (clonesrv5.c), kept deliberately close to the seed's design so
// that benchmarks can show the new server side by side with it.
//
// Like the seed it is one goroutine running one poll loop (the zloop reactor)
// over three sockets bound at consecutive ports:
//
//	P    ROUTER  snapshot requests: "ICANHAZ?" + subtree
//	P+1  PUB     sequenced updates
//	P+2  PULL    client updates (KVSET)
//
// and it keeps the seed's data structures and costs:
//
//   - the state is a plain Go map from key to the last message stored for it
//     (the frames as received from ZeroMQ, which pebbe/zmq4 already copies
//     into Go memory); an empty body deletes the key;
//   - each update gets sequence+1, is published with the ttl property exactly
//     as the client sent it, and is stored with the ttl property rewritten to
//     the absolute expiry in Unix milliseconds (zclock_time() + ttl*1000);
//   - once a second the whole map is scanned, the ttl property of every key
//     is parsed, and each expired key is published as a delete (the stored
//     message with the next sequence and an empty body, so its properties
//     still carry the absolute expiry) and removed;
//   - a snapshot walks the whole map, sends every key that starts with the
//     subtree as a KVSYNC (the stored message, so a ttl key carries its
//     absolute expiry, as in the seed), then KTHXBAI with the current
//     sequence and the subtree as body;
//   - sockets keep their default options, so snapshots are not paced: the
//     ROUTER silently drops what passes its send high-water mark (1000
//     messages), exactly as the seed does.
//   - like Model Five (and unlike Model Six) it sends no HUGZ heartbeats.
//
// Deliberate differences from the seed, so that benchmarks can run:
//
//   - no log line per update or per expiry (the seed prints one for each);
//   - a bad request is ignored and counted instead of aborting: a snapshot
//     request that is not exactly identity + "ICANHAZ?" + subtree, or a client
//     update that kvmsg.Decode rejects (kvmsg.DefaultLimits), is dropped;
//   - a ttl property that is not a whole number of seconds in range (per
//     kvmsg.Msg.TTL) means no expiry, where the seed's atoi would take any
//     leading digits (or a negative number);
//   - the reactor polls with a timeout of at most 100 ms so that Run notices
//     context cancellation promptly.
package baseline
