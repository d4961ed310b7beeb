package server

import "testing"

// TestRouterSndBufDefault: the snapshot connections' send buffer is bounded
// unless asked for the kernel's (-1); a set value is kept.
func TestRouterSndBufDefault(t *testing.T) {
	for _, c := range []struct{ set, want int }{{0, DefaultRouterSndBuf}, {-1, 0}, {1 << 20, 1 << 20}} {
		got, err := (&Config{RouterSndBuf: c.set}).withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if got.RouterSndBuf != c.want {
			t.Errorf("RouterSndBuf %d: %d after defaults, want %d", c.set, got.RouterSndBuf, c.want)
		}
	}
}
