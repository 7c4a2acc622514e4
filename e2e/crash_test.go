package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// reportBound is how soon after a VM's QEMU ends the API must show it: a
// liveness bound, not a speed target. Nothing in the agent polls a VM's
// state, so an event lost would never show; the report takes well under a
// second, and 15 s keeps a busy machine from failing the test.
const reportBound = 15 * time.Second

// TestGuestPoweroffAndCrashes: what a VM does by itself reaches the API.
// A guest that powers itself off is stopped, and stays so; a QEMU killed
// with SIGKILL is crashed, then started again under the default policy
// (restart) or left stopped under onCrash stop; and the same holds for a
// VM the agent adopted after a restart.
func TestGuestPoweroffAndCrashes(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir())
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)

	fragileReq := guestVM("fragile")
	fragileReq.OnCrash = api.OnCrashStop
	for _, req := range []api.VMCreate{guestVM("off"), guestVM("crashy"), fragileReq} {
		waitOK(t, c, mustOp(t)(c.CreateVM(ctx, req, client.CreateOptions{})))
	}
	waitConsole(t, c, "off", marker, 1)
	eventually(t, 10*time.Second, "the guest takes commands", func() error {
		b, err := c.ConsoleLog(ctx, "off", 1<<20)
		if err == nil && !strings.Contains(string(b), guest.CommandsLine) {
			err = fmt.Errorf("the test guest in %s predates %s: rebuild it with scripts/build-guest.sh %s", guestDir, guest.PoweroffCommand, guestDir)
		}
		return err
	})

	// The guest powers itself off, as its own user would.
	off := getVM(t, c, "off")
	con, err := c.Console(ctx, "off", "serial")
	if err != nil {
		t.Fatalf("opening the serial console: %v", err)
	}
	if _, err := fmt.Fprintf(con, "%s\n", guest.PoweroffCommand); err != nil {
		t.Fatal(err)
	}
	gone := waitGone(t, off.Status.PID)
	con.Close()
	off = waitVM(t, c, "off", gone, "the guest's poweroff", func(vm *api.VM) error {
		if vm.Status.PowerState != api.PowerStopped || vm.Status.StopCause != api.StopCauseGuestPoweroff {
			return fmt.Errorf("status %s, cause %q", vm.Status.PowerState, vm.Status.StopCause)
		}
		return nil
	})
	if off.Spec.PowerState != api.PowerStopped || off.Status.Reason == "" {
		t.Fatalf("after the guest's poweroff: desired %s, reason %q", off.Spec.PowerState, off.Status.Reason)
	}
	waitConsole(t, c, "off", guest.PoweroffLine, 1)

	// kill -9 under the default policy: crashed, then running again.
	waitConsole(t, c, "crashy", marker, 1)
	crashy := getVM(t, c, "crashy")
	if crashy.Spec.OnCrash != api.OnCrashRestart {
		t.Fatalf("default crash policy %q", crashy.Spec.OnCrash)
	}
	killed := crashy.Status.PID
	crashed := kill9(t, killed)
	crashy = waitVM(t, c, "crashy", crashed, "the kill", func(vm *api.VM) error {
		if vm.Status.PowerState != api.PowerCrashed || vm.Status.StopCause != api.StopCauseCrash {
			return fmt.Errorf("status %s, cause %q", vm.Status.PowerState, vm.Status.StopCause)
		}
		return nil
	})
	if !strings.Contains(crashy.Status.Reason, "killed by signal 9") || !strings.Contains(crashy.Status.Reason, "restarting in") {
		t.Fatalf("reason of the crash: %q", crashy.Status.Reason)
	}
	restarted := waitRestarted(t, c, "crashy", killed)
	waitConsole(t, c, "crashy", marker, 2)

	// kill -9 under onCrash stop: crashed, left stopped.
	waitConsole(t, c, "fragile", marker, 1)
	fragile := getVM(t, c, "fragile")
	crashed = kill9(t, fragile.Status.PID)
	fragile = waitVM(t, c, "fragile", crashed, "the kill", func(vm *api.VM) error {
		if vm.Status.PowerState != api.PowerCrashed || vm.Spec.PowerState != api.PowerStopped {
			return fmt.Errorf("status %s, desired %s", vm.Status.PowerState, vm.Spec.PowerState)
		}
		return nil
	})
	time.Sleep(4 * time.Second) // twice the first restart's pause
	fragile = getVM(t, c, "fragile")
	if fragile.Status.PowerState != api.PowerCrashed || fragile.Status.StopCause != api.StopCauseCrash || len(qemuPIDs(fragile.UID)) != 0 {
		t.Fatalf("under onCrash stop: %+v, qemu %v", fragile.Status, qemuPIDs(fragile.UID))
	}
	// Started by hand, it runs.
	waitOK(t, c, mustOp(t)(c.StartVM(ctx, "fragile")))
	waitConsole(t, c, "fragile", marker, 2)

	// The agent restarts and adopts crashy's QEMU, whose events it hears.
	srv.kill9()
	srv.start()
	eventually(t, 30*time.Second, "crashy adopted", func() error {
		vm := getVM(t, c, "crashy")
		if vm.Status.PID != restarted || vm.Status.PowerState != api.PowerRunning || time.Since(vm.Status.UpdatedAt) > 20*time.Second {
			return fmt.Errorf("status %s pid %d (want running pid %d)", vm.Status.PowerState, vm.Status.PID, restarted)
		}
		return nil
	})
	crashed = kill9(t, restarted)
	waitVM(t, c, "crashy", crashed, "the kill of an adopted qemu", func(vm *api.VM) error {
		if vm.Status.PowerState != api.PowerCrashed || vm.Status.StopCause != api.StopCauseCrash {
			return fmt.Errorf("status %s, cause %q", vm.Status.PowerState, vm.Status.StopCause)
		}
		return nil
	})
	waitRestarted(t, c, "crashy", restarted)
}

func getVM(t *testing.T, c *client.Client, name string) *api.VM {
	t.Helper()
	vm, err := c.GetVM(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// kill9 kills a QEMU and returns when it is gone.
func kill9(t *testing.T, pid int) time.Time {
	t.Helper()
	if pid == 0 {
		t.Fatal("no qemu pid to kill")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing qemu %d: %v", pid, err)
	}
	return waitGone(t, pid)
}

// waitGone waits until a process has ended and returns when.
func waitGone(t *testing.T, pid int) time.Time {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("qemu %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Now()
}

// waitVM waits until the API shows the VM as check wants, within
// reportBound of since, when its QEMU ended.
func waitVM(t *testing.T, c *client.Client, name string, since time.Time, after string, check func(*api.VM) error) *api.VM {
	t.Helper()
	var vm *api.VM
	var err error
	for {
		vm, err = c.GetVM(context.Background(), name)
		if err == nil {
			if err = check(vm); err == nil {
				t.Logf("%s: the api showed %s %s after %s", name, vm.Status.PowerState, vm.Status.StopCause, time.Since(since).Round(time.Millisecond))
				return vm
			}
		}
		if time.Since(since) > reportBound {
			t.Fatalf("%s: the api did not show %s within %s: %v (reason %q)", name, after, reportBound, err, vm.Status.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRestarted waits until the VM runs again under another QEMU than
// pid, and returns the new pid.
func waitRestarted(t *testing.T, c *client.Client, name string, pid int) int {
	t.Helper()
	var now int
	eventually(t, 60*time.Second, name+" started again", func() error {
		vm := getVM(t, c, name)
		if vm.Status.PowerState != api.PowerRunning || vm.Status.PID == 0 || vm.Status.PID == pid {
			return fmt.Errorf("status %s pid %d", vm.Status.PowerState, vm.Status.PID)
		}
		if !strings.Contains(vm.Status.Reason, "started again after a crash") {
			return fmt.Errorf("reason %q", vm.Status.Reason)
		}
		now = vm.Status.PID
		return nil
	})
	if pids := qemuPIDs(getVM(t, c, name).UID); len(pids) != 1 || pids[0] != now {
		t.Fatalf("qemu processes of %s: %v, want only %d", name, pids, now)
	}
	return now
}
