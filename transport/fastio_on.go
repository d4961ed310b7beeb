//go:build !clonekv_nofastio

package transport

// forcedFallback is true when built with the tag clonekv_nofastio.
const forcedFallback = false
