// Package guideclient is a Go rendering of the ZeroMQ Guide's Clone client
// Model Five (clonecli5.c), used as a reference peer in interoperability
// tests and benchmarks. It behaves as the Guide's client does:
//
//   - a DEALER connects to P, a SUB to P+1 subscribed to the subtree, a
//     PUSH to P+2;
//   - it sends "ICANHAZ?" + subtree, stores each KVSYNC until KTHXBAI, and
//     takes the KTHXBAI's sequence as its own;
//   - it then applies each update whose sequence is greater than its own
//     (taking that sequence) and drops the others, heartbeats included; an
//     empty body deletes the key. There is no gap detection and no re-join;
//   - every Interval (1 s in the Guide) it sends a KVSET: key subtree +
//     randof(10000), body randof(1000000) in decimal, property
//     ttl=randof(30), empty UUID, sequence 0.
//
// Go-side differences, none visible on the wire: the loop polls at most
// 100 ms at a time so that it stops when its context is done; the KVSET is
// sent with DONTWAIT (the C client blocks) and counted as unsent if the PUSH
// would block; a malformed message is skipped and counted rather than
// treated as the C kvmsg_recv would.
//
// One thing the published clonecli5.c does that this client does not, unless
// Config.SubscribeAll is set: it also calls zsocket_set_subscribe(subscriber,
// "") before subscribing to the subtree, so in fact it receives (and stores)
// every update of every subtree, and the HUGZ heartbeats of Model Six
// servers (which it then drops by sequence).
package guideclient
