package agent

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
)

// TestConverge: a placed VM is made and started, stopped and started
// again as its desired state says, and removed when deleted; its handle
// is saved while it exists and its events followed by one subscription.
func TestConverge(t *testing.T) {
	h := newHarness(t)
	vm := newVM("web")
	vm.Spec.Disks = []api.Disk{{Name: "root", SizeMiB: 10}}
	key := vm.Key()
	h.cp.place(vm)
	h.startAgent()

	st := h.running(key, 1)
	if st.Driver != hypervisortest.DriverName || len(st.Disks) != 1 || st.StopCause != "" {
		t.Fatalf("status after create: %+v", st)
	}
	fake, _ := h.host.VM(vm.UID)
	if fake.State != hypervisor.StateRunning || fake.PID != st.PID {
		t.Fatalf("fake vm %+v, reported pid %d", fake, st.PID)
	}
	if _, err := readHandle(handlePath(h.stateDir, vm.UID), vm.UID); err != nil {
		t.Fatalf("saved handle: %v", err)
	}

	gen := h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerStopped })
	st = h.cp.waitStatus(key, 5*time.Second, "stopped", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerStopped && s.ObservedGeneration == gen
	})
	if st.StopCause != api.StopCauseRequested || st.PID != 0 {
		t.Fatalf("status after a stop: %+v", st)
	}
	gen = h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerRunning })
	h.running(key, gen)
	gen = h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerPaused })
	h.cp.waitStatus(key, 5*time.Second, "paused", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerPaused && s.ObservedGeneration == gen
	})
	gen = h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerRunning; s.RestartCount++ })
	h.running(key, gen)
	if fake, _ := h.host.VM(vm.UID); fake.Starts != 3 {
		t.Fatalf("%d starts, want 3 (create, start, restart)", fake.Starts)
	}
	if n := h.drv.Subscribers(vm.UID); n != 1 {
		t.Fatalf("%d event subscriptions after stops and starts, want 1", n)
	}

	h.cp.setSpec(key, func(s *api.VMSpec) { s.Deletion = &api.Deletion{RequestedAt: time.Now()} })
	h.cp.until(5*time.Second, "vm removed", func() bool { return slices.Contains(h.cp.removed, key) })
	if _, ok := h.host.VM(vm.UID); ok {
		t.Fatal("fake vm still exists after delete")
	}
	if _, err := os.Stat(handlePath(h.stateDir, vm.UID)); !os.IsNotExist(err) {
		t.Fatalf("handle after delete: %v", err)
	}
}

// TestGuestPoweroffReachesServer: the agent hears what a VM does after
// the convergence that started it has ended. A guest that powers itself
// off is reported stopped with the cause guest-poweroff, and is not
// started again, also when the report must be retried.
func TestGuestPoweroffReachesServer(t *testing.T) {
	h := newHarness(t)
	vm := newVM("db")
	key := vm.Key()
	h.cp.place(vm)
	h.startAgent()
	h.running(key, 1)

	h.cp.mu.Lock()
	h.cp.failReports = 1 // the first report is lost: the agent tries again
	h.cp.mu.Unlock()
	if err := h.host.GuestPoweroff(vm.UID); err != nil {
		t.Fatal(err)
	}
	st := h.cp.waitStatus(key, 5*time.Second, "guest poweroff reported", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerStopped
	})
	if st.StopCause != api.StopCauseGuestPoweroff || st.Reason == "" || st.ObservedGeneration != 1 {
		t.Fatalf("status after a guest poweroff: %+v", st)
	}
	time.Sleep(3 * time.Second) // past the report's retry
	if fake, _ := h.host.VM(vm.UID); fake.Starts != 1 || fake.State != hypervisor.StateStopped {
		t.Fatalf("a guest that powered itself off was started again: %+v", fake)
	}
	// The server makes stopped the desired state; a start starts it.
	h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerStopped })
	gen := h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerRunning })
	if st := h.running(key, gen); st.StopCause != "" {
		t.Fatalf("a running vm has a stop cause: %+v", st)
	}
	// Once the agent has carried out the start, the count tells whether it
	// ever started the powered-off guest by itself, however late.
	if fake, _ := h.host.VM(vm.UID); fake.Starts != 2 {
		t.Fatalf("started %d times, want twice: at first and when asked to", fake.Starts)
	}
}

// TestCrashRestartPolicy: a VM whose process is killed, or whose guest
// halts on an internal error, is reported crashed with the cause, then
// started again under the default policy (restart).
func TestCrashRestartPolicy(t *testing.T) {
	h := newHarness(t)
	vm := newVM("app")
	key := vm.Key()
	h.cp.place(vm)
	h.startAgent()
	first := h.running(key, 1)

	if err := h.host.Kill(vm.UID); err != nil {
		t.Fatal(err)
	}
	st := h.cp.waitStatus(key, 2*time.Second, "crash reported", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerCrashed
	})
	if st.StopCause != api.StopCauseCrash || !strings.Contains(st.Reason, "killed by signal 9") || !strings.Contains(st.Reason, "restarting in 100ms") {
		t.Fatalf("status after a kill: %+v", st)
	}
	st = h.running(key, 1)
	if st.PID == first.PID || !strings.Contains(st.Reason, "started again after a crash") {
		t.Fatalf("status after the restart: %+v (pid before %d)", st, first.PID)
	}

	// A guest halted on an internal error: its process is stopped, then
	// started again.
	pid := st.PID
	if err := h.host.Halt(vm.UID, hypervisor.CauseInternalError, "qemu halted the vm on an internal error: KVM internal error. Suberror: 1"); err != nil {
		t.Fatal(err)
	}
	st = h.cp.waitStatus(key, 2*time.Second, "internal error reported", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerCrashed
	})
	if st.StopCause != api.StopCauseInternalError || !strings.Contains(st.Reason, "KVM internal error") {
		t.Fatalf("status after an internal error: %+v", st)
	}
	if n := h.drv.CallCount(hypervisortest.OpStop, vm.UID); n != 1 {
		t.Fatalf("%d stops of the halted vm, want 1", n)
	}
	st = h.running(key, 1)
	if st.PID == pid {
		t.Fatal("the halted process still runs")
	}
	for _, r := range h.cp.reportsOf(key) {
		if r.PowerState == api.PowerRunning && r.StopCause != "" {
			t.Errorf("running with a stop cause: %+v", r)
		}
	}
}

// TestCrashStopPolicy: under onCrash stop, a crashed VM stays crashed and
// is not started again, until someone starts it.
func TestCrashStopPolicy(t *testing.T) {
	h := newHarness(t)
	vm := newVM("batch")
	vm.Spec.OnCrash = api.OnCrashStop
	key := vm.Key()
	h.cp.place(vm)
	h.startAgent()
	h.running(key, 1)

	if err := h.host.Kill(vm.UID); err != nil {
		t.Fatal(err)
	}
	st := h.cp.waitStatus(key, 2*time.Second, "crash reported", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerCrashed
	})
	if st.StopCause != api.StopCauseCrash || !strings.Contains(st.Reason, "onCrash: stop") || st.ObservedGeneration != 1 {
		t.Fatalf("status after a kill: %+v", st)
	}
	time.Sleep(10 * h.cfg.RestartDelay)
	if fake, _ := h.host.VM(vm.UID); fake.Starts != 1 {
		t.Fatalf("a crashed vm under onCrash stop was started again: %+v", fake)
	}
	// The server makes stopped the desired state: still crashed.
	gen := h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerStopped })
	st = h.cp.waitStatus(key, 5*time.Second, "stopped generation observed", func(s api.VMStatus) bool {
		return s.ObservedGeneration == gen
	})
	if st.PowerState != api.PowerCrashed || st.StopCause != api.StopCauseCrash {
		t.Fatalf("status once stopped is desired: %+v", st)
	}
	gen = h.cp.setSpec(key, func(s *api.VMSpec) { s.PowerState = api.PowerRunning })
	h.running(key, gen)
	// Once the agent has carried out the start, the count tells whether it
	// ever started the crashed vm by itself, however late.
	if fake, _ := h.host.VM(vm.UID); fake.Starts != 2 {
		t.Fatalf("started %d times, want twice: at first and when asked to", fake.Starts)
	}
}

// TestCrashLoopBacksOff: a VM that crashes as soon as it runs is started
// again after pauses that double, not in a spin.
func TestCrashLoopBacksOff(t *testing.T) {
	h := newHarness(t)
	h.cfg.RestartDelay, h.cfg.MaxRestartDelay = 50*time.Millisecond, 400*time.Millisecond
	vm := newVM("flaky")
	key := vm.Key()
	h.cp.place(vm)
	h.startAgent()
	h.running(key, 1)

	stop := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(stop) {
		if fake, _ := h.host.VM(vm.UID); fake.PID != 0 {
			_ = h.host.Kill(vm.UID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// 50+100+200+400+400 ms of pauses fit in 1.5 s: at most 6 starts,
	// where a fixed pause would make 20 or more.
	fake, _ := h.host.VM(vm.UID)
	if fake.Starts < 3 || fake.Starts > 7 {
		t.Fatalf("%d starts in 1.5 s of crashes", fake.Starts)
	}
	var delays []string
	for _, r := range h.cp.reportsOf(key) {
		if _, after, ok := strings.Cut(r.Reason, "restarting in "); ok && r.PowerState == api.PowerCrashed {
			d, _, _ := strings.Cut(after, " ")
			if len(delays) == 0 || delays[len(delays)-1] != d {
				delays = append(delays, d)
			}
		}
	}
	if len(delays) < 3 || delays[0] != "50ms" || delays[1] != "100ms" || delays[2] != "200ms" {
		t.Fatalf("restart delays %v, want 50ms, 100ms, 200ms...", delays)
	}
	for _, d := range delays {
		if d == "800ms" {
			t.Fatalf("delay above the maximum: %v", delays)
		}
	}
}

func TestRestartDelay(t *testing.T) {
	w := &worker{a: &Agent{cfg: Config{RestartDelay: 2 * time.Second, MaxRestartDelay: 5 * time.Minute}}}
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 3: 8 * time.Second, 8: 256 * time.Second, 9: 5 * time.Minute, 100: 5 * time.Minute} {
		if got := w.restartDelay(n); got != want {
			t.Errorf("delay after crash %d = %v, want %v", n, got, want)
		}
	}
}

// TestAgentRestartAdopts: a restarted agent re-attaches to the VM that
// kept running (no second start) and hears its events; a VM whose
// process died while no agent ran is a crash its policy applies to.
func TestAgentRestartAdopts(t *testing.T) {
	h := newHarness(t)
	keeps, dies, stays := newVM("keeps"), newVM("dies"), newVM("stays")
	stays.Spec.OnCrash = api.OnCrashStop
	for _, vm := range []*api.VM{keeps, dies, stays} {
		h.cp.place(vm)
	}
	h.startAgent()
	before := h.running(keeps.Key(), 1)
	diedPID := h.running(dies.Key(), 1).PID
	h.running(stays.Key(), 1)

	h.stopAgent()
	if err := h.host.KillUnwatched(dies.UID); err != nil {
		t.Fatal(err)
	}
	if err := h.host.KillUnwatched(stays.UID); err != nil {
		t.Fatal(err)
	}
	restarted := len(h.cp.reportsOf(keeps.Key()))
	h.startAgent()

	h.cp.until(5*time.Second, "adopted vm reported", func() bool { return len(h.cp.reports[keeps.Key()]) > restarted })
	if st := h.running(keeps.Key(), 1); st.PID != before.PID {
		t.Fatalf("adopted vm pid %d, was %d", st.PID, before.PID)
	}
	if fake, _ := h.host.VM(keeps.UID); fake.Starts != 1 {
		t.Fatalf("adopted vm started %d times", fake.Starts)
	}
	h.cp.waitStatus(dies.Key(), 5*time.Second, "vm killed while no agent ran started again", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerRunning && s.PID != diedPID
	})
	if fake, _ := h.host.VM(dies.UID); fake.Starts != 2 {
		t.Fatalf("vm killed while no agent ran: %+v, want started again", fake)
	}
	st := h.cp.waitStatus(stays.Key(), 5*time.Second, "crash while away reported", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerCrashed
	})
	if st.StopCause != api.StopCauseCrash || !strings.Contains(st.Reason, "no agent was watching") {
		t.Fatalf("status of a vm killed while no agent ran: %+v", st)
	}
	time.Sleep(5 * h.cfg.RestartDelay)
	if fake, _ := h.host.VM(stays.UID); fake.Starts != 1 {
		t.Fatalf("vm under onCrash stop started after the agent restart: %+v", fake)
	}

	// The adopted VM's events reach the server.
	if err := h.host.GuestPoweroff(keeps.UID); err != nil {
		t.Fatal(err)
	}
	h.cp.waitStatus(keeps.Key(), 2*time.Second, "poweroff of the adopted vm", func(s api.VMStatus) bool {
		return s.PowerState == api.PowerStopped && s.StopCause == api.StopCauseGuestPoweroff
	})
}

// TestCorruptHandle: a handle file that cannot be read never keeps the
// agent from starting. It is skipped, left in place, reported in the
// host's status; its VM is reported in error and not made a second time,
// and the other VMs are adopted.
func TestCorruptHandle(t *testing.T) {
	h := newHarness(t)
	good, bad := newVM("good"), newVM("bad")
	h.cp.place(good)
	h.cp.place(bad)
	h.startAgent()
	before := h.running(good.Key(), 1)
	h.running(bad.Key(), 1)
	h.stopAgent()

	badPath := handlePath(h.stateDir, bad.UID)
	if err := os.WriteFile(badPath, []byte(`{"version": 1, "uid": "`), 0o600); err != nil {
		t.Fatal(err)
	}
	// An empty file, as a power cut leaves an unsynced write.
	emptyPath := handlePath(h.stateDir, "uid-gone")
	if err := os.WriteFile(emptyPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	reported := len(h.cp.reportsOf(good.Key()))
	h.startAgent()

	h.cp.until(5*time.Second, "good vm reported by the new agent", func() bool { return len(h.cp.reports[good.Key()]) > reported })
	if st := h.running(good.Key(), 1); st.PID != before.PID {
		t.Fatalf("good vm pid %d, was %d", st.PID, before.PID)
	}
	if fake, _ := h.host.VM(good.UID); fake.Starts != 1 {
		t.Fatalf("good vm started %d times", fake.Starts)
	}
	st := h.cp.waitStatus(bad.Key(), 5*time.Second, "bad handle reported", func(s api.VMStatus) bool {
		return s.Error != nil
	})
	if !strings.Contains(st.Error.Message, badPath) || st.PowerState != api.PowerError {
		t.Fatalf("status of the vm with a corrupt handle: %+v %+v", st, st.Error)
	}
	if n := h.drv.CallCount(hypervisortest.OpCreate, bad.UID); n != 0 {
		t.Fatalf("the vm with a corrupt handle was made again (%d creates)", n)
	}
	h.cp.until(5*time.Second, "host warnings", func() bool {
		if len(h.cp.hostReports) == 0 {
			return false
		}
		ws := h.cp.hostReports[len(h.cp.hostReports)-1].Warnings
		return len(ws) == 2 && strings.Contains(strings.Join(ws, "\n"), badPath) && strings.Contains(strings.Join(ws, "\n"), emptyPath)
	})
	for _, p := range []string{badPath, emptyPath} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("unusable handle %s was not left in place: %v", p, err)
		}
	}
}

// TestHandlesSavedWhole: a saved handle is complete JSON in its final
// name, with no temporary file left beside it.
func TestHandlesSavedWhole(t *testing.T) {
	h := newHarness(t)
	vm := newVM("saved")
	h.cp.place(vm)
	h.startAgent()
	st := h.running(vm.Key(), 1)
	saved, err := readHandle(handlePath(h.stateDir, vm.UID), vm.UID)
	if err != nil || saved.PID != st.PID || saved.Extra[extraHost] != "h1" {
		t.Fatalf("saved handle %+v, %v", saved, err)
	}
	entries, _ := os.ReadDir(handleDir(h.stateDir))
	for _, e := range entries {
		if e.Name() != vm.UID+".json" {
			t.Errorf("stray file %s in the handle dir", filepath.Join(handleDir(h.stateDir), e.Name()))
		}
	}
}

// TestConsoleOutlivesWatch: an open console keeps flowing both ways when
// the agent's watch connection ends and is made again.
func TestConsoleOutlivesWatch(t *testing.T) {
	h := newHarness(t)
	vm := newVM("term")
	h.cp.place(vm)
	h.startAgent()
	h.running(vm.Key(), 1)

	h.cp.requestStream(api.StreamRequest{ID: "s1", VM: vm.Key(), Console: "serial"})
	var server, guest net.Conn
	select {
	case server = <-h.cp.streams:
	case <-time.After(5 * time.Second):
		t.Fatal("the agent did not dial back for the console")
	}
	defer server.Close()
	select {
	case guest = <-h.host.Consoles:
	case <-time.After(5 * time.Second):
		t.Fatal("the agent did not open the vm's console")
	}
	defer guest.Close()
	exchange := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		server.SetDeadline(deadline)
		guest.SetDeadline(deadline)
		go fmt.Fprintf(guest, "guest says %s\n", what)
		if line, err := bufio.NewReader(server).ReadString('\n'); err != nil || line != "guest says "+what+"\n" {
			t.Fatalf("%s: from the guest: %q, %v", what, line, err)
		}
		go fmt.Fprintf(server, "user types %s\n", what)
		if line, err := bufio.NewReader(guest).ReadString('\n'); err != nil || line != "user types "+what+"\n" {
			t.Fatalf("%s: to the guest: %q, %v", what, line, err)
		}
	}
	exchange("before")

	h.cp.mu.Lock()
	made := h.cp.watchesMade
	h.cp.mu.Unlock()
	h.cp.dropWatches()
	h.cp.until(5*time.Second, "the agent watches again", func() bool { return h.cp.watchesMade > made && len(h.cp.watches) > 0 })
	time.Sleep(100 * time.Millisecond)
	exchange("after")
}

// TestOrphanRemoved: a VM this host still has but the server forgot
// while the agent was away is removed, with its handle; a VM the server
// still has is kept.
func TestOrphanRemoved(t *testing.T) {
	h := newHarness(t)
	kept, orphan := newVM("kept"), newVM("orphan")
	h.cp.place(kept)
	h.cp.place(orphan)
	h.startAgent()
	h.running(kept.Key(), 1)
	h.running(orphan.Key(), 1)
	h.stopAgent()

	h.cp.mu.Lock()
	delete(h.cp.vms, orphan.Key())
	h.cp.mu.Unlock()
	h.startAgent()
	h.cp.until(5*time.Second, "orphan removed", func() bool {
		_, ok := h.host.VM(orphan.UID)
		return !ok
	})
	if _, err := os.Stat(handlePath(h.stateDir, orphan.UID)); !os.IsNotExist(err) {
		t.Fatalf("orphan's handle: %v", err)
	}
	if fake, ok := h.host.VM(kept.UID); !ok || fake.PID == 0 || fake.Starts != 1 {
		t.Fatalf("kept vm: %+v", fake)
	}
}
