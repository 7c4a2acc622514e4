// Package version holds Polyvisor's version, set at build time with
// -ldflags "-X github.com/polyvisor/polyvisor/internal/version.Version=...
// -X github.com/polyvisor/polyvisor/internal/version.Commit=...".
package version

import (
	"runtime"
	"runtime/debug"

	"github.com/polyvisor/polyvisor/api"
)

// Version is the running Polyvisor's version.
var Version = "0.1.0-dev"

// Commit is the source revision Polyvisor was built from; when not set
// at build time it is read from the build's VCS stamp, if any.
var Commit = ""

// Get describes the running binary.
func Get() api.Version {
	return api.Version{
		Version:   Version,
		Commit:    commit(),
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
}

// commit is Commit, else the revision go build stamped into the binary
// ("-dirty" when the tree had changes), else "".
func commit() string {
	if Commit != "" {
		return Commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}
