package vsphere

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// bigModel is a vCenter with two datacenters, each with a standalone host
// and two clusters of four hosts, and two running VMs in each of their
// six resource pools; bigSim grows it.
func bigModel() *simulator.Model {
	m := simulator.VPX()
	m.Datacenter = 2
	m.Cluster = 2
	m.ClusterHost = 4
	m.Host = 1
	m.Portgroup = 2
	m.Machine = 2
	return m
}

// bigSim starts a vcsim estate of n VMs. vcsim makes a model's VMs one
// at a time, each waiting out its task (tens of ms), so most are cloned
// here from the model's VMs by many workers at once. vcsim cannot clone
// into one folder from two requests at once, so each worker has its own
// folder in a datacenter's VM folder, and clones that datacenter's VMs
// (same pool, host and devices, stopped).
func bigSim(tb testing.TB, n int) *simEnv {
	tb.Helper()
	start := time.Now()
	e := newSim(tb, bigModel())
	ctx := context.Background()
	const workers = 32
	e.c.DefaultTransport().MaxIdleConnsPerHost = workers // no TLS handshake per task

	byFolder := map[types.ManagedObjectReference][]mo.VirtualMachine{}
	var folders []types.ManagedObjectReference
	for _, vm := range e.vms(tb, "name", "parent") {
		if byFolder[*vm.Parent] == nil {
			folders = append(folders, *vm.Parent)
		}
		byFolder[*vm.Parent] = append(byFolder[*vm.Parent], vm)
	}
	todo := n - e.model.Count().Machine
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		parent := folders[w%len(folders)]
		sources := byFolder[parent]
		folder, err := object.NewFolder(e.c, parent).CreateFolder(ctx, fmt.Sprintf("bench-%d", w))
		must(tb, err)
		count := todo / workers
		if w < todo%workers {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range count {
				src := sources[i%len(sources)]
				name := fmt.Sprintf("%s_W%d_%d", src.Name, w, i)
				task, err := object.NewVirtualMachine(e.c, src.Self).Clone(ctx, folder, name, types.VirtualMachineCloneSpec{})
				if err == nil {
					err = task.Wait(ctx)
				}
				if err != nil {
					errc <- fmt.Errorf("clone %s: %w", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		tb.Fatal(err)
	default:
	}
	if got := e.model.Count().Machine; got != n {
		tb.Fatalf("vcsim has %d vms, want %d", got, n)
	}
	tb.Logf("vcsim estate of %d vms ready in %v", n, time.Since(start).Round(time.Millisecond))
	return e
}

// inventoryTimes times Inventory and a plain govmomi listing of the same
// VMs' properties (view.Retrieve into []mo.VirtualMachine) over the same
// connection, alternately, rounds times each, and returns their medians.
func inventoryTimes(tb testing.TB, e *simEnv, p *Provider, rounds int) (inventory, plain time.Duration) {
	tb.Helper()
	ctx := context.Background()
	c, err := p.conn()
	must(tb, err)
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	must(tb, err)
	defer func() { _ = v.Destroy(ctx) }()
	want := e.model.Count().Machine

	var inv, pl []time.Duration
	for range rounds {
		start := time.Now()
		got, err := p.Inventory(ctx)
		must(tb, err)
		inv = append(inv, time.Since(start))
		if len(got.VMs) != want {
			tb.Fatalf("inventory has %d vms, want %d", len(got.VMs), want)
		}

		start = time.Now()
		var vms []mo.VirtualMachine
		must(tb, v.Retrieve(ctx, []string{"VirtualMachine"}, vmProps, &vms))
		pl = append(pl, time.Since(start))
		if len(vms) != want {
			tb.Fatalf("govmomi lists %d vms, want %d", len(vms), want)
		}
	}
	median := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	return median(inv), median(pl)
}

// BenchmarkInventory5000 compares Inventory with a plain govmomi
// property-collector listing of the same VMs' properties, on a vcsim
// estate of 5,000 VMs (set POLYVISOR_BENCH_VMS for another size). Both
// go through the same TLS SOAP endpoint; Inventory also reads hosts,
// clusters, datacenters, datastores, networks and folders.
func BenchmarkInventory5000(b *testing.B) {
	n := 5000
	if s := os.Getenv("POLYVISOR_BENCH_VMS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	e := bigSim(b, n)
	p := e.connect(b)
	ctx := context.Background()
	c, err := p.conn()
	must(b, err)
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	must(b, err)

	b.Run("provider.Inventory", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Inventory(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("govmomi.view.Retrieve", func(b *testing.B) {
		for b.Loop() {
			var vms []mo.VirtualMachine
			if err := v.Retrieve(ctx, []string{"VirtualMachine"}, vmProps, &vms); err != nil {
				b.Fatal(err)
			}
		}
	})
	inv, plain := inventoryTimes(b, e, p, 5)
	b.Logf("median of 5 alternating rounds: Inventory %v, govmomi view.Retrieve %v, ratio %.2f",
		inv.Round(time.Millisecond), plain.Round(time.Millisecond), float64(inv)/float64(plain))
}
