package server

import (
	"context"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/scheduler"
)

// TestHostCapacityIsWhatTheSchedulerOffers: a host's status carries the
// capacity the scheduler offers under the server's overcommit ratios, so a
// client compares allocation with that and not with the physical CPUs; and
// a VM that fills the capacity exactly is placed, one vCPU more is not.
func TestHostCapacityIsWhatTheSchedulerOffers(t *testing.T) {
	cfg := scheduler.Config{CPUOvercommit: 2.5, MemoryOvercommit: 1.5, ReservedMemoryMiB: 1024}
	e := newEnv(t, Config{Scheduler: cfg})
	ctx := context.Background()
	// The env's hosts report 64 CPUs and 256 GiB.
	want := api.HostCapacity{VCPUs: 160, MemoryMiB: (256<<10 - 1024) * 3 / 2}

	h, err := e.as("viewer", "").GetHost(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if h.Status.Capacity != want {
		t.Errorf("GET h1: capacity %+v, want %+v", h.Status.Capacity, want)
	}
	hosts, err := e.as("viewer", "").ListHosts(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts.Items {
		if h.Status.Capacity != want {
			t.Errorf("list: host %s capacity %+v, want %+v", h.Name, h.Status.Capacity, want)
		}
	}

	// h2 holds nothing yet: what the capacity says is what fits.
	pa := e.super.WithProject("pa")
	mk := func(name string, vcpus int) error {
		_, err := pa.CreateVM(ctx, api.VMCreate{Name: name, VCPUs: vcpus, MemoryMiB: 128, Host: "h2",
			Disks: []api.Disk{{Image: "img"}}, PowerState: api.PowerStopped}, client.CreateOptions{})
		return err
	}
	for i, name := range []string{"fill-a", "fill-b", "fill-c"} {
		// 64 + 64 + 32 = 160 vCPUs, the capacity.
		n := 64
		if i == 2 {
			n = 32
		}
		if err := mk(name, n); err != nil {
			t.Fatalf("placing %s (%d vCPUs) within the capacity: %v", name, n, err)
		}
	}
	if err := mk("one-too-many", 1); err == nil {
		t.Fatal("a VM past the capacity the host reports was placed")
	}
	h, err = e.super.GetHost(ctx, "h2")
	if err != nil {
		t.Fatal(err)
	}
	if h.Status.Allocated.VCPUs != h.Status.Capacity.VCPUs {
		t.Errorf("h2 full: allocated %d vCPUs of a capacity of %d", h.Status.Allocated.VCPUs, h.Status.Capacity.VCPUs)
	}
}
