package server

import (
	"context"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/scheduler"
)

// TestHostCapacityIsWhatTheSchedulerOffers: a host's status carries the
// capacity the scheduler offers under the server's overcommit ratios, so a
// client compares allocation with that and not with the physical CPUs; and
// a VM that fills the capacity exactly is placed, one vCPU more is not.
func TestHostCapacityIsWhatTheSchedulerOffers(t *testing.T) {
	t.Parallel()
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

// Host events show a host as GET does, with the server's allocation and
// capacity; what an agent claims for them is never stored.
func TestHostEventsCarryAllocationAndCapacity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pa := e.super.WithProject("pa")
	events, _ := e.super.Events(ctx, api.EventHost)
	tok := e.registerHost(ctx, "h9")
	st := api.HostStatus{State: api.HostReady, CPUs: 2, MemoryMiB: 1024, Accel: "tcg",
		Capacity: api.HostCapacity{VCPUs: 1 << 20, MemoryMiB: 1 << 40}, Allocated: api.Allocation{VCPUs: 999}}
	if _, err := e.client(tok, "").PutHostStatus(ctx, "h9", st); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"h9": true}
	for len(want) > 0 {
		select {
		case ev := <-events:
			if ev.Host == nil || ev.Host.Name != "h9" || ev.Host.Status.CPUs != 2 {
				continue
			}
			if c := ev.Host.Status.Capacity; c.VCPUs != 8 || c.VCPUs == 1<<20 {
				t.Fatalf("event capacity %+v: the agent's claim, or none; want the scheduler's 2 CPUs x 4", c)
			}
			if ev.Host.Status.Allocated.VCPUs != 0 {
				t.Fatalf("event allocation %+v: the agent's claim", ev.Host.Status.Allocated)
			}
			delete(want, "h9")
		case <-ctx.Done():
			t.Fatal("no event for h9's report")
		}
	}
	h, ok := e.s.hosts.Get("h9")
	if !ok || h.Status.Capacity != (api.HostCapacity{}) || h.Status.Allocated != (api.Allocation{}) {
		t.Fatalf("stored h9: capacity %+v allocated %+v", h.Status.Capacity, h.Status.Allocated)
	}
	// A VM placed on h9 shows in h9's next event.
	if _, err := pa.CreateVM(ctx, api.VMCreate{Name: "on-h9", VCPUs: 1, MemoryMiB: 128, Host: "h9",
		Disks: []api.Disk{{Image: "img"}}, PowerState: api.PowerStopped}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st.DiskFreeMiB = 77 // a change, so that the report is written
	if _, err := e.client(tok, "").PutHostStatus(ctx, "h9", st); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-events:
			if ev.Host == nil || ev.Host.Name != "h9" || ev.Host.Status.DiskFreeMiB != 77 {
				continue
			}
			if ev.Host.Status.Allocated.VCPUs != 1 {
				t.Fatalf("h9's event: allocated %+v, want the 1 vCPU of its VM", ev.Host.Status.Allocated)
			}
			return
		case <-ctx.Done():
			t.Fatal("no event for h9's second report")
		}
	}
}
