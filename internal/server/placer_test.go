package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/scheduler"
)

// TestPlacerAfterRestart: after the server restarts over the same store,
// a VM counts once in its host's allocation however often it changes, and
// deleting it frees its room for the next create.
func TestPlacerAfterRestart(t *testing.T) {
	t.Parallel()
	cfg := Config{Scheduler: scheduler.Config{CPUOvercommit: 1, ReservedMemoryMiB: -1}}
	e := newEnv(t, cfg)
	ctx := context.Background()
	st := ctlHostStatus(2, 1024) // room for exactly one vm of 2 vcpus and 1024 MiB
	tok := e.ctlJoin(ctx, "small", st, true)
	pa := e.super.WithProject("pa")
	ctlCreate(t, pa, "big", "small", 2, 1024)
	full := api.Allocation{VCPUs: 2, MemoryMiB: 1024, VMs: 1}
	ctlEventually(t, 10*time.Second, "the vm counts on its host", func() error {
		if a := e.ctlAllocated(t, "small"); a != full {
			return fmt.Errorf("allocated %+v, want %+v", a, full)
		}
		return nil
	})

	e = e.ctlReopen(cfg)
	e.ctlBeat("small", tok, st)
	// The host reports the vm: a change the placer follows after the
	// restart, as any later change of the vm.
	e.ctlObserved(t, tok, "pa/big")
	if a := e.ctlAllocated(t, "small"); a != full {
		t.Errorf("after a restart and a change of the vm, host small has %+v allocated, want %+v", a, full)
	}
	pa = e.super.WithProject("pa")
	if _, err := pa.DeleteVM(ctx, "big", false); err != nil {
		t.Fatal(err)
	}
	if err := e.client(tok, "").VMRemoved(ctx, "pa/big"); err != nil {
		t.Fatal(err)
	}
	ctlEventually(t, 10*time.Second, "the deleted vm frees its room", func() error {
		if a := e.ctlAllocated(t, "small"); a != (api.Allocation{}) {
			return fmt.Errorf("host small has %+v allocated with no vm on it", a)
		}
		return nil
	})
	ctlCreate(t, pa, "big2", "small", 2, 1024)
}
