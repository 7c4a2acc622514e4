package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/keeper"
)

// runKeeper runs a real keeper on dir until the returned stop is called.
func runKeeper(t *testing.T, dir string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- keeper.Run(ctx, keeper.Config{Dir: dir}) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := keeper.Dial(dir); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the keeper does not answer")
		}
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("keeper: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

// The agent adopts the keeper that runs for its state directory, feeds it
// each answered heartbeat and, once its watch synced, its HA VMs'
// processes, and says in its heartbeat whether the keeper is armed:
// armed with T_fence and no HA VM; not armed while the keeper does not
// hold an HA VM's process (the fake driver's PIDs are no real
// processes), armed again once that VM is no longer HA; not armed once
// the keeper is gone; armed again when one runs again (a service
// manager's), without an agent restart.
func TestAgentReportsItsKeeper(t *testing.T) {
	h := newHarness(t)
	h.cp.mu.Lock()
	h.cp.fenceMS = 60000
	h.cp.mu.Unlock()
	stop := runKeeper(t, h.stateDir)
	// Never run: a keeper answers, and the agent adopts it.
	h.cfg.KeeperCommand = []string{"/nonexistent/polyvisor", "keeper"}
	h.startAgent()
	keeperIs := func(what string, cond func(k *api.HostKeeper) bool) {
		t.Helper()
		h.cp.until(10*time.Second, what, func() bool {
			n := len(h.cp.hostReports)
			return n > 0 && h.cp.hostReports[n-1].Keeper != nil && cond(h.cp.hostReports[n-1].Keeper)
		})
	}
	armed := func(k *api.HostKeeper) bool { return k.Armed }
	keeperIs("the keeper armed", armed)

	vm := newVM("web")
	vm.Spec.HA = api.HARestart
	h.cp.place(vm)
	h.running(vm.Key(), 0)
	keeperIs("the keeper not armed: it does not hold the HA vm's process", func(k *api.HostKeeper) bool {
		return !k.Armed && strings.Contains(k.Message, "does not hold")
	})
	h.cp.setSpec(vm.Key(), func(s *api.VMSpec) { s.HA = api.HANone })
	keeperIs("the keeper armed again, no HA vm left", armed)

	stop()
	keeperIs("the keeper reported not running", func(k *api.HostKeeper) bool {
		return !k.Armed && strings.Contains(k.Message, "not running")
	})
	if !strings.Contains(h.logs.String(), "lost the keeper") {
		t.Error("the agent did not log the keeper's loss")
	}
	runKeeper(t, h.stateDir)
	keeperIs("the keeper armed once one runs again", armed)
}
