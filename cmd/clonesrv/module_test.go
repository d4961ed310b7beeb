package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
)

// joinerMain is the whole external program: it joins the server given as
// its argument, sets a key and waits for its echo, and reads it back.
const joinerMain = `package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/clonekv/clonekv/client"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{Endpoints: []string{os.Args[1]}, Subtree: "/ext/"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer c.Close()
	seq, err := c.SetWait(ctx, "/ext/hello", []byte("from another module"), 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "set:", err)
		os.Exit(1)
	}
	v, ok := c.Get("/ext/hello")
	fmt.Printf("seq=%d ok=%v value=%q\n", seq, ok, v)
}
`

// TestExternalModuleJoins (issue 9, behaviour 4): a module outside this
// repository that requires github.com/clonekv/clonekv (replaced by this
// checkout) builds offline from the module cache, without protoactor in
// its dependencies, and joins a running clonesrv: set, echo, get.
func TestExternalModuleJoins(t *testing.T) {
	bin := buildServer(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go \S+$`).Find(gomod)
	dir := t.TempDir()
	mod := fmt.Sprintf("module example.com/joiner\n\n%s\n\nrequire github.com/clonekv/clonekv v0.0.0\n\nreplace github.com/clonekv/clonekv => %s\n", goLine, root)
	sum, err := os.ReadFile(filepath.Join(root, "go.sum")) // the client's deps are a subset
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": []byte(joinerMain)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd := func(args ...string) *exec.Cmd {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		// Offline: only the module cache; GOFLAGS=-mod=mod lets go fill in
		// the requirements the new module's go.mod does not list.
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		return cmd
	}
	joiner := filepath.Join(dir, "joiner")
	if out, err := goCmd("build", "-o", joiner, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build of the external module: %v\n%s", err, out)
	}
	deps, err := goCmd("list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	if strings.Contains(string(deps), "protoactor") {
		t.Errorf("the client pulls protoactor into an application:\n%s", deps)
	}
	t.Logf("external module: %d packages", strings.Count(string(deps), "\n"))

	port := testkit.FreePorts(t)
	stderr := &syncBuffer{}
	srv := exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--data-dir", t.TempDir())
	srv.Stderr = stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	var out, errOut bytes.Buffer
	run := exec.Command(joiner, fmt.Sprintf("tcp://127.0.0.1:%d", port))
	run.Stdout, run.Stderr = &out, &errOut
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("joiner: %v\n%s\nserver:\n%s", err, errOut.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		run.Process.Kill()
		t.Fatalf("joiner still running after 60s\n%s", errOut.String())
	}
	if got, want := strings.TrimSpace(out.String()), `seq=1 ok=true value="from another module"`; got != want {
		t.Errorf("joiner printed %q, want %q", got, want)
	}
}
