package placement

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

type noQueue struct{}

func (noQueue) Resizing() []string { return nil }
func (noQueue) PendingSize(vm *api.VM) api.Usage {
	return api.Usage{VCPUs: int64(vm.Spec.VCPUs), MemoryMiB: vm.Spec.MemoryMiB}
}

// newTestPlacer is a placer over an embedded store holding hosts, each
// with cpus CPUs and mem MiB of memory.
func newTestPlacer(t *testing.T, cpus int, mem int64, hosts ...string) (*Placer, *store.Collection[api.VM]) {
	t.Helper()
	var hs []*api.Host
	for _, h := range hosts {
		hs = append(hs, &api.Host{Meta: api.Meta{Name: h}, Status: api.HostStatus{State: api.HostReady, CPUs: cpus, MemoryMiB: mem}})
	}
	return newPlacerOf(t, scheduler.Config{ReservedMemoryMiB: -1}, hs...)
}

// newPlacerOf is a placer with the scheduler's configuration sched over
// an embedded store holding hosts.
func newPlacerOf(t testing.TB, sched scheduler.Config, hosts ...*api.Host) (*Placer, *store.Collection[api.VM]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	vms := store.NewCollection(st, "vms", func(v *api.VM, rev int64) { v.Version = rev })
	hc := store.NewCollection(st, "hosts", func(h *api.Host, rev int64) { h.Version = rev })
	recs := admission.NewCollection(st)
	if err := st.Start(ctx); err != nil {
		t.Fatalf("starting the store: %v", err)
	}
	for batch := range slices.Chunk(hosts, 100) {
		var ops []store.Op
		for _, h := range batch {
			ops = append(ops, hc.OpCreate(h.Name, h))
		}
		if _, err := st.Txn(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	p := New(Config{VMs: vms, Hosts: hc, Queue: noQueue{}, Records: admission.New(st, recs), Scheduler: sched})
	return p, vms
}

// TestConcurrentPlacementsSpread: placements chosen at once on one server
// go to different hosts while there are hosts to spare, and once released
// the best host is chosen again.
func TestConcurrentPlacementsSpread(t *testing.T) {
	p, _ := newTestPlacer(t, 8, 8192, "h1", "h2", "h3", "h4")
	ctx := context.Background()
	req := scheduler.Request{VCPUs: 1, MemoryMiB: 1024}
	seen := map[string]bool{}
	var releases []func()
	for i := range 4 {
		host, conds, release, err := p.Place(ctx, req, OwnHosts)
		if err != nil || len(conds) == 0 {
			t.Fatalf("placement %d: %v (conditions %d)", i, err, len(conds))
		}
		if seen[host] {
			t.Fatalf("placement %d chose %s again while %d hosts were free (chosen %v)", i, host, 4-len(seen), seen)
		}
		seen[host] = true
		releases = append(releases, release)
	}
	if p.InFlight() != 4 {
		t.Fatalf("%d placements in flight, want 4", p.InFlight())
	}
	for _, r := range releases {
		r()
		r() // twice is harmless
	}
	if p.InFlight() != 0 {
		t.Fatalf("%d placements in flight after release, want 0", p.InFlight())
	}
	if host, _, release, err := p.Place(ctx, req, OwnHosts); err != nil || host != "h1" {
		t.Fatalf("after release: %s, %v; want h1 (most free, first by name)", host, err)
	} else {
		release()
	}
}

// TestInflightNeverRefuses: a placement in flight may yet fail, so it
// never makes another one refused: with room for one VM left and one
// placement in flight, the next is still placed (its admission record,
// not the in-flight count, decides between them).
func TestInflightNeverRefuses(t *testing.T) {
	p, vms := newTestPlacer(t, 2, 2048, "only")
	ctx := context.Background()
	req := scheduler.Request{VCPUs: 1, MemoryMiB: 2048}
	_, _, release, err := p.Place(ctx, req, OwnHosts)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	host, _, release2, err := p.Place(ctx, req, OwnHosts)
	if err != nil || host != "only" {
		t.Fatalf("with one placement in flight: %q, %v; want placed on only", host, err)
	}
	release2()
	// Once a VM is stored there, the host is full: refused.
	if _, err := vms.Create(ctx, "p/vm", &api.VM{Meta: api.Meta{Name: "vm", Project: "p"}, Spec: api.VMSpec{Host: "only", VCPUs: 1, MemoryMiB: 2048}}); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = p.Place(ctx, req, OwnHosts)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnprocessable {
		t.Fatalf("on a full host: %v, want 422", err)
	}
}
