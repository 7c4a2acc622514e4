// Package devns runs a command with a /dev of the test's choosing, in a
// private mount namespace: one with no /dev/kvm, or one whose /dev/kvm
// opens read-write but is not KVM (a character device that answers no KVM
// ioctl). Tests use it to see what Polyvisor does on machines without
// KVM and on machines whose KVM does not work, whatever this machine has.
package devns

import (
	"os"
	"os/exec"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// KVM says what /dev/kvm is inside the namespace.
type KVM string

const (
	// NoKVM: there is no /dev/kvm.
	NoKVM KVM = "none"
	// BrokenKVM: /dev/kvm opens read-write, but is /dev/null underneath,
	// so no guest can run on it.
	BrokenKVM KVM = "broken"
	// HostKVM: the host's own /dev/kvm, if it has one.
	HostKVM KVM = "host"
)

// script builds the new /dev on a tmpfs, binds it over /dev, and runs the
// command. Only the devices QEMU and Polyvisor use are carried over.
const script = `set -e
d=$(mktemp -d)
mount -t tmpfs -o mode=755 devns "$d"
for n in null zero full random urandom tty ptmx; do
	if [ -e /dev/$n ]; then touch "$d/$n"; mount --bind /dev/$n "$d/$n"; fi
done
mkdir -p "$d/net" "$d/pts" "$d/shm"
if [ -e /dev/net/tun ]; then touch "$d/net/tun"; mount --bind /dev/net/tun "$d/net/tun"; fi
mount --bind /dev/pts "$d/pts"
mount -t tmpfs -o mode=1777 shm "$d/shm"
case "$DEVNS_KVM" in
broken) touch "$d/kvm"; mount --bind /dev/null "$d/kvm" ;;
host) if [ -e /dev/kvm ]; then touch "$d/kvm"; mount --bind /dev/kvm "$d/kvm"; fi ;;
esac
mount --bind "$d" /dev
exec "$@"`

// Command returns name with args to be run in a mount namespace whose /dev
// holds kvm as asked. Where mount namespaces cannot be made (not root, no
// unshare) it skips the test, saying why, or fails it (package peer).
func Command(t testing.TB, kvm KVM, name string, args ...string) *exec.Cmd {
	t.Helper()
	Require(t)
	full := append([]string{"-m", "--propagation", "private", "sh", "-c", script, "devns", name}, args...)
	cmd := exec.Command("unshare", full...)
	cmd.Env = append(os.Environ(), "DEVNS_KVM="+string(kvm))
	return cmd
}

// Require skips the test where a private /dev cannot be made here, or
// fails it where peers are required (package peer).
func Require(t testing.TB) {
	t.Helper()
	peer.Root(t, "a private /dev (a mount namespace)")
	peer.Binary(t, "unshare", "apt-get install util-linux")
}
