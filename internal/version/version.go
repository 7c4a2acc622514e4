// Package version holds Polyvisor's version, set at build time with
// -ldflags "-X github.com/polyvisor/polyvisor/internal/version.Version=...".
package version

// Version is the running Polyvisor's version.
var Version = "0.1.0-dev"
