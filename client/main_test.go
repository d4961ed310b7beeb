package client

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/clonekv/clonekv/internal/testkit"
)

// binDir holds binaries built for this test run (see buildBinary).
var (
	binDir   string
	binMu    sync.Mutex
	binBuilt = map[string]string{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clonekv-client-test-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinary builds the command at pkg (e.g. "github.com/clonekv/clonekv/cmd/clonesrv") once
// per test run and returns its path.
func buildBinary(t testing.TB, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binBuilt[pkg]; ok {
		return p
	}
	out := filepath.Join(binDir, filepath.Base(pkg))
	if err := testkit.GoBuild(out, pkg); err != nil {
		t.Fatal(err)
	}
	binBuilt[pkg] = out
	return out
}
