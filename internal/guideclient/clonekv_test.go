package guideclient_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
	"github.com/clonekv/clonekv/server"
)

// TestAgainstClonekv is issue item 7: clients written as the seed's Model
// Five client (DEALER + SUB + PUSH, random /client/NNNN keys with ttls,
// subtree /client/) run against the clonekv server and end with the same map
// as a fresh snapshot.
func TestAgainstClonekv(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv, err := server.New(server.Config{Bind: "127.0.0.1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Serve(t, srv, 5*time.Second) // stopped when the test ends
	checkGuideClients(ctx, t, srv.Port())
	st := srv.Stats()
	if st.UpdatesAccepted.Load() < 40 || st.RejectedTotal("") != 0 {
		t.Errorf("server accepted %d, rejected %d: want the clients' ~80 updates, none rejected",
			st.UpdatesAccepted.Load(), st.RejectedTotal(""))
	}
	t.Logf("clonekv: accepted %d, expired %d, snapshots %d", st.UpdatesAccepted.Load(), st.Expirations.Load(), st.SnapshotsServed.Load())
}
