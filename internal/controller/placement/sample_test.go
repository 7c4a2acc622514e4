package placement

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/scheduler"
)

// fleet is n ready hosts h000, h001, ... with 8 CPUs; memory(i) gives
// host i's memory.
func fleet(n int, memory func(i int) int64) []*api.Host {
	hs := make([]*api.Host, n)
	for i := range hs {
		hs[i] = &api.Host{Meta: api.Meta{Name: fmt.Sprintf("h%03d", i)},
			Status: api.HostStatus{State: api.HostReady, CPUs: 8, MemoryMiB: memory(i)}}
	}
	return hs
}

// TestLargeFleetsAreSampled: on a fleet larger than scheduler.MinSample a
// placement chooses the best of the sample of hosts with room it walked
// to, and the next one walks on from where it stopped, so that every
// host has its turn; round the ring, it starts again at the first.
func TestLargeFleetsAreSampled(t *testing.T) {
	// 300 hosts, each with a little more memory than the one before: the
	// best of a window is its last host. 1 % of 300 is under MinSample:
	// samples of 100.
	p, _ := newPlacerOf(t, scheduler.Config{ReservedMemoryMiB: -1, SamplePercent: 1},
		fleet(300, func(i int) int64 { return 8192 + int64(i) })...)
	ctx := context.Background()
	req := scheduler.Request{VCPUs: 1, MemoryMiB: 1024}
	for i, want := range []string{"h099", "h199", "h299", "h099"} {
		host, _, release, err := p.Place(ctx, req, OwnHosts)
		if err != nil {
			t.Fatalf("placement %d: %v", i, err)
		}
		release()
		if host != want {
			t.Fatalf("placement %d chose %s, want %s (the best of its window of 100)", i, host, want)
		}
	}
	// A pinned placement reads its host alone and leaves the walk be.
	if host, _, release, err := p.Place(ctx, scheduler.Request{VCPUs: 1, MemoryMiB: 1024, Host: "h005"}, OwnHosts); err != nil || host != "h005" {
		t.Fatalf("pinned: %s, %v", host, err)
	} else {
		release()
	}
	if host, _, release, err := p.Place(ctx, req, OwnHosts); err != nil || host != "h199" {
		t.Fatalf("after the pin: %s, %v; want h199", host, err)
	} else {
		release()
	}
}

// TestSampledPlacementFindsTheOnlyRoom: sampling never makes a fit
// missed: with one host of 300 that has room, every placement walks until
// it finds it, whatever it starts from; with none, the refusal gives every
// host's reason.
func TestSampledPlacementFindsTheOnlyRoom(t *testing.T) {
	p, _ := newPlacerOf(t, scheduler.Config{ReservedMemoryMiB: -1},
		fleet(300, func(i int) int64 {
			if i == 7 {
				return 8192
			}
			return 512
		})...)
	ctx := context.Background()
	for i := range 3 {
		host, _, release, err := p.Place(ctx, scheduler.Request{VCPUs: 1, MemoryMiB: 3000}, OwnHosts)
		if err != nil || host != "h007" {
			t.Fatalf("placement %d: %s, %v; want h007, the only host with room", i, host, err)
		}
		// Held in flight: the third placement finds h007 full with the
		// first two and no host else with room, and still places there
		// (placements in flight never refuse).
		defer release()
	}
	_, _, _, err := p.Place(ctx, scheduler.Request{VCPUs: 1, MemoryMiB: 16384}, OwnHosts)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnprocessable {
		t.Fatalf("too large for every host: %v, want 422", err)
	}
	if len(ae.Details) != 300 {
		t.Fatalf("the refusal names %d hosts' reasons, want all 300: %v", len(ae.Details), ae.Message)
	}
}
