package vsphere

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// watching runs Watch until the test ends, and hands over its changes.
type watching struct {
	changes chan provider.Change
	ended   chan struct{} // closed when Watch returns err
	err     error
}

func startWatch(t *testing.T, p *Provider) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{changes: make(chan provider.Change, 10000), ended: make(chan struct{})}
	go func() {
		defer close(w.ended)
		w.err = p.Watch(ctx, func(ch provider.Change) { w.changes <- ch })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.ended:
		case <-time.After(10 * time.Second):
			t.Error("watch did not end with its context")
		}
	})
	w.await(t, "the first resync", func(ch provider.Change) bool { return ch.Resync })
	return w
}

// await waits up to 5 s for a change that ok accepts, and returns it.
func (w *watching) await(t *testing.T, what string, ok func(provider.Change) bool) provider.Change {
	t.Helper()
	start := time.Now()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ch := <-w.changes:
			if ok(ch) {
				t.Logf("%s seen after %v", what, time.Since(start).Round(time.Millisecond))
				return ch
			}
		case <-w.ended:
			t.Fatalf("watch ended waiting for %s: %v", what, w.err)
		case <-deadline:
			t.Fatalf("%s not seen within 5 s", what)
		}
	}
}

func TestWatch(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)
	w := startWatch(t, p)
	ctx := context.Background()

	vm := e.vmByName(t, "DC0_H0_VM0")
	id := vm.Reference().Value

	t.Run("power off", func(t *testing.T) {
		done(t)(vm.PowerOff(ctx))
		ch := w.await(t, "the power-off", func(ch provider.Change) bool {
			return ch.VM != nil && ch.VM.ID == id && ch.VM.PowerState == provider.PowerStopped
		})
		got := ch.VM
		if got.Name != "DC0_H0_VM0" || got.Path != e.path(t, vm.Reference()) || got.Host == "" ||
			got.Datacenter == "" || got.VCPUs == 0 || len(got.Disks) == 0 || len(got.NICs) == 0 {
			t.Errorf("the changed vm is not whole: %+v", got)
		}
	})

	t.Run("rename", func(t *testing.T) {
		done(t)(vm.Rename(ctx, "renamed-vm"))
		ch := w.await(t, "the rename", func(ch provider.Change) bool {
			return ch.VM != nil && ch.VM.ID == id && ch.VM.Name == "renamed-vm"
		})
		if want := e.path(t, vm.Reference()); ch.VM.Path != want {
			t.Errorf("path %q, want %q", ch.VM.Path, want)
		}
	})

	var clone types.ManagedObjectReference
	t.Run("clone", func(t *testing.T) {
		parent := e.vm(t, id, "parent").Parent
		task, err := vm.Clone(ctx, object.NewFolder(e.c, *parent), "watched-clone", types.VirtualMachineCloneSpec{})
		must(t, err)
		info, err := task.WaitForResult(ctx)
		must(t, err)
		clone = info.Result.(types.ManagedObjectReference)
		ch := w.await(t, "the clone", func(ch provider.Change) bool {
			return ch.VM != nil && ch.VM.ID == clone.Value
		})
		if ch.VM.Name != "watched-clone" || ch.VM.Path != e.path(t, clone) {
			t.Errorf("clone %+v", ch.VM)
		}
	})

	t.Run("destroy", func(t *testing.T) {
		if clone.Value == "" {
			t.Skip("no clone")
		}
		done(t)(object.NewVirtualMachine(e.c, clone).Destroy(ctx))
		w.await(t, "the destroy", func(ch provider.Change) bool { return ch.DeletedVM == clone.Value })
	})

	t.Run("host", func(t *testing.T) {
		// vcsim's maintenance-mode task does not notify watchers; report
		// the change as vCenter would.
		host := e.vm(t, id, "runtime.host").Runtime.Host
		sctx := e.model.Service.Context
		sctx.Map.AtomicUpdate(sctx, sctx.Map.Get(*host), []types.PropertyChange{
			{Name: "runtime.inMaintenanceMode", Val: true},
		})
		w.await(t, "the host change", func(ch provider.Change) bool {
			return ch.Host != nil && ch.Host.ID == host.Value && ch.Host.State == provider.HostMaintenance
		})
	})

	t.Run("folder rename", func(t *testing.T) {
		parent := e.vm(t, id, "parent").Parent
		done(t)(object.NewFolder(e.c, *parent).Rename(ctx, "vms"))
		w.await(t, "a resync", func(ch provider.Change) bool { return ch.Resync })
	})
}

func TestWatchEnds(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)

	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- p.Watch(ctx, func(provider.Change) {}) }()
		time.Sleep(200 * time.Millisecond)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("watch did not end with its context")
		}
	})

	t.Run("connection lost", func(t *testing.T) {
		w := startWatch(t, p)
		e.server.Close()
		select {
		case <-w.ended:
			if !errors.Is(w.err, provider.ErrUnreachable) {
				t.Fatalf("err = %v, want ErrUnreachable", w.err)
			}
			t.Log(w.err)
		case <-time.After(15 * time.Second):
			t.Fatal("watch went on after the server closed")
		}
	})
}
