//go:build soak

package durability

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestMassExpirySoak is behaviour 2 of issue 11 at full size: 200,000 keys
// with the same ttl expire together (make soak, without the race
// detector). EXPIRY_FLAGS adds clonesrv flags to compare, e.g.
// EXPIRY_FLAGS="--expiry-rate -1" for expiries paced by credits alone.
//
//	go test -tags soak -count=1 -run '^TestMassExpirySoak$' -v ./durability/
func TestMassExpirySoak(t *testing.T) {
	r := expiryStorm(t, 200_000, strings.Fields(os.Getenv("EXPIRY_FLAGS"))...)
	r.check(t, time.Second)
}
