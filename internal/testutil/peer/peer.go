// Package peer says what a test does when a real peer it needs is not
// there: QEMU, libvirtd, etcd-server, Chromium, Prometheus, a tool such
// as ip, passt or openssl, or root for mount and network namespaces and
// tmpfs mounts. Normally the test skips, saying what is missing and how
// to get it. Where the peers are required, as in scripts/test.sh, which
// installs and starts them all and sets POLYVISOR_REQUIRE_PEERS=1, the
// test fails instead: a peer that CI should have cannot silently turn a
// test into a skip.
package peer

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Env is the variable that makes every peer required when it is "1".
const Env = "POLYVISOR_REQUIRE_PEERS"

// Required reports whether a missing peer fails the test.
func Required() bool { return os.Getenv(Env) == "1" }

// Missing ends the test because a peer is missing, format saying which
// and how to get it: it skips, or fails where peers are required.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s=1: a missing peer fails the test)", msg, Env)
	}
	t.Skip(msg)
}

// Binary returns the path of the command name, or ends the test as
// Missing; install says how to get it (e.g. "apt-get install qemu-utils").
func Binary(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not installed (%s; scripts/test.sh installs it)", name, install)
	}
	return path
}

// Root ends the test as Missing unless it runs as root; what says what
// needs root (e.g. "mounting a tmpfs").
func Root(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "%s needs root (the tests run as uid %d; scripts/test.sh runs them as root)", what, os.Geteuid())
	}
}

// Without lets a test go on without a peer, checking less: format says
// what is missing and what goes unchecked, and is logged. Where peers are
// required it fails the test instead, as Missing does.
func Without(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s=1: a missing peer fails the test)", msg, Env)
	}
	t.Log(msg)
}
