//go:build soak

package durability

import (
	"testing"
	"time"
)

// TestMassExpirySoak is behaviour 2 of issue 11 at full size: 200,000 keys
// with the same ttl (make soak, without the race detector).
//
//	go test -tags soak -count=1 -run '^TestMassExpirySoak$' -v ./durability/
func TestMassExpirySoak(t *testing.T) {
	r := expiryStorm(t, 200_000, "--memory")
	r.check(t, time.Second)
}
