package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/devns"
)

// Guests boot on every kind of machine: with no /dev/kvm, and with one that
// opens read-write but cannot run a guest (as on hosts whose nested KVM
// module runs no stock kernel). The server decides its accelerator by
// running a probe guest, says why in the host's status, and the VM boots.
func TestGuestsBootWhateverKVMIs(t *testing.T) {
	requireQEMU(t)
	devns.Require(t)
	for _, tc := range []struct {
		kvm    devns.KVM
		reason string
	}{
		{devns.NoKVM, "/dev/kvm does not exist"},
		{devns.BrokenKVM, "the probe guest did not run under kvm"},
	} {
		t.Run(string(tc.kvm), func(t *testing.T) {
			port := freePort(t)
			s := startServerWith(t, &serverProc{t: t, dataDir: t.TempDir(), port: port, kvm: tc.kvm,
				args: []string{"--listen", "127.0.0.1:" + strconv.Itoa(port)}})
			ctx := context.Background()
			h, err := s.c.GetHost(ctx, "local")
			if err != nil {
				t.Fatal(err)
			}
			if h.Status.Accel != "tcg" || !strings.Contains(h.Status.AccelReason, tc.reason) {
				t.Fatalf("host status: accel %q because %q; want tcg because %q", h.Status.Accel, h.Status.AccelReason, tc.reason)
			}
			importGuest(t, s.c)
			op, err := s.c.CreateVM(ctx, guestVM("boots-"+string(tc.kvm)), client.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			waitOK(t, s.c, op)
			waitConsole(t, s.c, "boots-"+string(tc.kvm), marker, 1)
		})
	}

	// Asking for KVM where it does not work is refused at start, naming why.
	t.Run("kvm required", func(t *testing.T) {
		cmd := devns.Command(t, devns.BrokenKVM, binary, "server", "--data-dir", t.TempDir(), "--listen", "", "--accel", "kvm")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("the server started with --accel kvm on a broken /dev/kvm:\n%s", out)
		}
		if !strings.Contains(string(out), "kvm was asked for (--accel kvm) but does not work on this host: the probe guest did not run under kvm") {
			t.Fatalf("the refusal does not say why:\n%s", out)
		}
	})
}
