package guideclient_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"clonekv/server"
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
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(srvCtx) }()
	defer func() {
		stopSrv()
		if err := <-srvDone; err != nil {
			t.Errorf("clonekv Run: %v", err)
		}
	}()
	<-srv.Ready()
	checkGuideClients(ctx, t, srv.Port())
	st := srv.Stats()
	if st.UpdatesAccepted.Load() < 40 || st.RejectedTotal("") != 0 {
		t.Errorf("server accepted %d, rejected %d: want the clients' ~80 updates, none rejected",
			st.UpdatesAccepted.Load(), st.RejectedTotal(""))
	}
	t.Logf("clonekv: accepted %d, expired %d, snapshots %d", st.UpdatesAccepted.Load(), st.Expirations.Load(), st.SnapshotsServed.Load())
}
