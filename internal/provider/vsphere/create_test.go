package vsphere

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// makeTemplate turns the VM named name into a template.
func (e *simEnv) makeTemplate(t *testing.T, name string) *object.VirtualMachine {
	t.Helper()
	ctx := context.Background()
	vm := e.vmByName(t, name)
	done(t)(vm.PowerOff(ctx))
	must(t, vm.MarkAsTemplate(ctx))
	return vm
}

func TestCreateVM(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)
	ctx := testCtx(t)
	tmpl := e.makeTemplate(t, "DC0_H0_VM1")
	tmplPath := e.path(t, tmpl.Reference())
	inv, err := p.Inventory(ctx)
	must(t, err)
	byName := func(name string) (string, string) { // id, datacenter of host or cluster
		for _, h := range inv.Hosts {
			if h.Name == name {
				return h.ID, h.Datacenter
			}
		}
		for _, c := range inv.Clusters {
			if c.Name == name {
				return c.ID, c.Datacenter
			}
		}
		t.Fatalf("no host or cluster %q", name)
		return "", ""
	}

	t.Run("by name, powered on, on a network", func(t *testing.T) {
		vm, err := p.CreateVM(ctx, provider.CreateSpec{
			Name: "web-1", Template: "DC0_H0_VM1", VCPUs: 2, MemoryMiB: 1536,
			Network: "DC0_DVPG0", PowerOn: true,
		})
		must(t, err)
		got := e.vm(t, vm.ID, "name", "runtime.powerState", "config.hardware", "parent")
		if got.Name != "web-1" || got.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn ||
			got.Config.Hardware.NumCPU != 2 || got.Config.Hardware.MemoryMB != 1536 {
			t.Fatalf("govmomi sees %s %s %d cpus %d MiB", got.Name, got.Runtime.PowerState,
				got.Config.Hardware.NumCPU, got.Config.Hardware.MemoryMB)
		}
		if vm.Name != "web-1" || vm.PowerState != provider.PowerRunning || vm.VCPUs != 2 || vm.MemoryMiB != 1536 ||
			vm.Template || vm.Path != e.path(t, got.Self) || !strings.HasSuffix(vm.Path, "/DC0/vm/web-1") {
			t.Fatalf("returned %+v", vm)
		}
		if len(vm.NICs) == 0 || vm.NICs[0].Network != "DC0_DVPG0" {
			t.Fatalf("nics %+v, want the first on DC0_DVPG0", vm.NICs)
		}
		if _, dc := byName("DC0_H0"); vm.Datacenter != dc {
			t.Fatalf("datacenter %q, want %q", vm.Datacenter, dc)
		}
	})

	t.Run("by path, into a cluster, on a datastore", func(t *testing.T) {
		cluster, _ := byName("DC0_C1")
		vm, err := p.CreateVM(ctx, provider.CreateSpec{
			Name: "db-1", Template: tmplPath, Cluster: "DC0_C1", Datastore: "LocalDS_0",
		})
		must(t, err)
		if vm.Cluster != cluster || vm.PowerState != provider.PowerStopped {
			t.Fatalf("returned %+v, want stopped in cluster %s", vm, cluster)
		}
		if len(vm.Disks) == 0 || !strings.HasPrefix(vm.Disks[0].Path, "[LocalDS_0] db-1/") {
			t.Fatalf("disks %+v", vm.Disks)
		}
		if got := e.power(t, vm.ID); got != types.VirtualMachinePowerStatePoweredOff {
			t.Fatalf("govmomi sees %s", got)
		}
	})

	t.Run("onto a host, by ids", func(t *testing.T) {
		host, dc := byName("DC0_C0_H1")
		vm, err := p.CreateVM(ctx, provider.CreateSpec{
			Name: "cache-1", Template: "DC0_H0_VM1", Datacenter: dc, Host: host, PowerOn: true,
		})
		must(t, err)
		if vm.Host != host || e.vm(t, vm.ID, "runtime.host").Runtime.Host.Value != host {
			t.Fatalf("on host %s, want %s", vm.Host, host)
		}
	})

	before := len(e.vms(t))
	for _, c := range []struct {
		what string
		spec provider.CreateSpec
		want error
		name string // the error names it
	}{
		{"unknown template", provider.CreateSpec{Name: "x-1", Template: "no-such-template"}, provider.ErrNotFound, "no-such-template"},
		{"unknown template path", provider.CreateSpec{Name: "x-2", Template: "/DC0/vm/nothing"}, provider.ErrNotFound, "/DC0/vm/nothing"},
		{"name of a clone", provider.CreateSpec{Name: "web-1", Template: "DC0_H0_VM1", PowerOn: true}, provider.ErrExists, "web-1"},
		{"name of a model vm", provider.CreateSpec{Name: "DC0_H0_VM0", Template: "DC0_H0_VM1"}, provider.ErrExists, "DC0_H0_VM0"},
		{"unknown cluster", provider.CreateSpec{Name: "x-3", Template: "DC0_H0_VM1", Cluster: "nope"}, provider.ErrNotFound, "nope"},
		{"unknown network", provider.CreateSpec{Name: "x-4", Template: "DC0_H0_VM1", Network: "nonet"}, provider.ErrNotFound, "nonet"},
		{"no template", provider.CreateSpec{Name: "x-5"}, provider.ErrUnsupported, "x-5"},
	} {
		t.Run(c.what, func(t *testing.T) {
			vm, err := p.CreateVM(ctx, c.spec)
			if !errors.Is(err, c.want) || vm != nil {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.name) {
				t.Errorf("error does not name %q: %v", c.name, err)
			}
			t.Log(err)
		})
	}
	if after := len(e.vms(t)); after != before {
		t.Fatalf("%d vms after the refused creates, %d before: something was half-made", after, before)
	}
	names := map[string]int{}
	for _, vm := range e.vms(t) {
		names[vm.Name]++
	}
	if names["web-1"] != 1 || names["DC0_H0_VM0"] != 1 {
		t.Fatalf("names %v", names)
	}
}
