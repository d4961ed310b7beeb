// Package relay is the benchmark's ceiling column: a bare one-goroutine
// PULL(P+2) → PUB(P+1) relay that moves Clone messages with no map, no
// snapshot socket and no ttl, to show what libzmq and the pebbe/zmq4 binding
// can move on their own.
//
// Every message of exactly five frames is forwarded unchanged except for the
// sequence frame, which is replaced by the relay's own counter (1, 2, 3, …)
// so that subscribers can check for gaps. Any other message is dropped and
// counted, and consumes no sequence. Sockets keep their default options, so
// the PUB drops at its high-water mark like any other. The loop waits in a
// poll of at most 100 ms and then drains everything ready with DONTWAIT
// receives, one message at a time, without further polls.
package relay
