package main

import (
	"fmt"
	"runtime/debug"
)

// version may be set at link time (-ldflags "-X main.version=v1.2.3");
// otherwise it comes from the module's build info.
var version string

// versionString is what --version prints: version, commit, and the Go
// toolchain, from the binary's build info. A binary built with
// -buildvcs=false (or outside git) has no commit and says so.
func versionString() string {
	v, commit, modified, when, goVersion := version, "unknown", false, "", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			case "vcs.time":
				when = s.Value
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	out := fmt.Sprintf("clonesrv %s commit %s", v, commit)
	if modified {
		out += " (modified)"
	}
	if when != "" {
		out += " " + when
	}
	return out + " " + goVersion
}
