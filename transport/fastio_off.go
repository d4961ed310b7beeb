//go:build clonekv_nofastio

package transport

// forcedFallback is true when built with the tag clonekv_nofastio: the
// one-call paths are off and every socket goes through pebbe/zmq4's
// per-frame calls, as it would if pebbe's socket field were not found.
const forcedFallback = true
