package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/scheduler"
)

// TestResizeCheckedAgainstHost: a resize is held to its host's room, with
// the overcommit ratios, as a create is: growth past it is refused with a
// 422 naming the resource; two resizes racing for the last room do not
// both get it; a create sees the room a queued resize holds.
func TestResizeCheckedAgainstHost(t *testing.T) {
	t.Parallel()
	// Host small offers 4 cpus x 2 = 8 vcpus and 2048 MiB.
	cfg := Config{Scheduler: scheduler.Config{CPUOvercommit: 2, ReservedMemoryMiB: -1}}
	e := newEnv(t, cfg)
	ctx := context.Background()
	tok := e.ctlJoin(ctx, "small", ctlHostStatus(4, 2048), true)
	pa := e.super.WithProject("pa")
	resize := func(name string, rc api.VMReconfigure) error {
		_, err := pa.ReconfigureVM(ctx, name, rc, client.VMActionOptions{})
		return err
	}
	refused := func(err error, field string) {
		t.Helper()
		var se *client.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusUnprocessableEntity || se.Err.Field != field ||
			!strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), `host "small"`) {
			t.Errorf("got %v, want a 422 naming %s and host small", err, field)
		}
	}
	for _, vm := range []struct {
		name  string
		vcpus int
	}{{"a", 1}, {"b", 4}, {"c", 2}} {
		ctlCreate(t, pa, vm.name, "small", vm.vcpus, 256)
		e.ctlObserved(t, tok, "pa/"+vm.name)
	}
	// 7 of 8 vcpus and 768 of 2048 MiB are allocated.
	refused(resize("a", api.VMReconfigure{VCPUs: 3}), "vcpus")
	// More vcpus than the host has cpus, though a larger host exists.
	refused(resize("b", api.VMReconfigure{VCPUs: 5}), "vcpus")
	refused(resize("a", api.VMReconfigure{MemoryMiB: 2048}), "memoryMiB")
	// A shrink passes, and so does growth that fits.
	if err := resize("b", api.VMReconfigure{VCPUs: 2}); err != nil {
		t.Fatalf("shrinking b: %v", err)
	}
	e.ctlObserved(t, tok, "pa/b")
	if err := resize("a", api.VMReconfigure{VCPUs: 2, MemoryMiB: 512}); err != nil {
		t.Fatalf("growing a into the room b left: %v", err)
	}
	e.ctlObserved(t, tok, "pa/a")

	// 6 of 8 vcpus, 1024 of 2048 MiB. A resize queued behind the create
	// of d holds its room: the next create finds none.
	ctlCreate(t, pa, "d", "small", 1, 128)
	if err := resize("d", api.VMReconfigure{MemoryMiB: 1024}); err != nil {
		t.Fatalf("queueing a resize of d: %v", err)
	}
	_, err := pa.CreateVM(ctx, api.VMCreate{Name: "e", VCPUs: 1, MemoryMiB: 128, Host: "small", PowerState: api.PowerStopped,
		Disks: []api.Disk{{SizeMiB: 1}}}, client.CreateOptions{})
	if statusOfErr(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "memory") {
		t.Errorf("create into the room a queued resize holds: %v, want 422 for memory", err)
	}
	e.ctlObserved(t, tok, "pa/d")
	if err := resize("d", api.VMReconfigure{MemoryMiB: 128}); err != nil {
		t.Fatalf("shrinking d: %v", err)
	}
	e.ctlObserved(t, tok, "pa/d")

	// 7 of 8 vcpus, 1152 of 2048 MiB. Two resizes of +768 MiB at once:
	// one fits.
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"b", "c"} {
		wg.Go(func() { errs[i] = resize(name, api.VMReconfigure{MemoryMiB: 1024}) })
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("two resizes racing for 1536 MiB with room for one: %v / %v, want exactly one through", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil {
			refused(err, "memoryMiB")
		}
	}
}
