package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// GoBuild builds the Go package pkg (an import path, or "." for the
// current test's package) into the binary out, passing flags to go build
// first. Tests of process behaviour (signals, restarts) exec the result.
// It takes no testing.TB so that TestMain can build once per run; the
// error carries go build's output.
func GoBuild(out, pkg string, flags ...string) error {
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", out, pkg)
	if b, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// RunWithBinary is the whole TestMain of a package whose tests exec one
// binary: it builds pkg (GoBuild, with flags) into a temporary directory
// as name, sets *path to it, runs the tests and removes the directory.
// Call it as os.Exit(testkit.RunWithBinary(m, &bin, "clonesrv", pkg)).
func RunWithBinary(m *testing.M, path *string, name, pkg string, flags ...string) int {
	dir, err := os.MkdirTemp("", "clonekv-"+name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*path = filepath.Join(dir, name)
	if err := GoBuild(*path, pkg, flags...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
