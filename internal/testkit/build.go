package testkit

import (
	"fmt"
	"os/exec"
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
