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

// TestWatchResent: a server that sends the whole view again (as vcsim
// does when the view changes) yields changes only for what differs, and
// a deletion for what it no longer sends, even without a leave.
func TestWatchResent(t *testing.T) {
	var got []provider.Change
	w := &watcher{fn: func(ch provider.Change) { got = append(got, ch) }, ix: newIndex(0),
		props: map[types.ManagedObjectReference]map[string]any{}, entered: map[types.ManagedObjectReference]bool{}}
	dc := types.ManagedObjectReference{Type: "Datacenter", Value: "datacenter-2"}
	folder := types.ManagedObjectReference{Type: "Folder", Value: "group-v3"}
	enter := func(ref types.ManagedObjectReference, props ...any) types.ObjectUpdate {
		u := types.ObjectUpdate{Obj: ref, Kind: types.ObjectUpdateKindEnter}
		for i := 0; i < len(props); i += 2 {
			u.ChangeSet = append(u.ChangeSet, types.PropertyChange{Op: types.PropertyChangeOpAssign, Name: props[i].(string), Val: props[i+1]})
		}
		return u
	}
	vm := func(id, name string, power types.VirtualMachinePowerState) types.ObjectUpdate {
		return enter(vmRef(id), "name", name, "parent", folder, "runtime.powerState", power)
	}
	batch := func(emit, truncated bool, us ...types.ObjectUpdate) {
		t.Helper()
		got = nil
		must(t, w.apply(context.Background(), []types.PropertyFilterUpdate{{ObjectSet: us}}, emit, truncated))
	}
	on, off := types.VirtualMachinePowerStatePoweredOn, types.VirtualMachinePowerStatePoweredOff

	// The first answer, in two pages.
	batch(false, true, enter(dc, "name", "DC0"), enter(folder, "name", "vm", "parent", dc))
	batch(false, false, vm("vm-1", "a", on), vm("vm-2", "b", on), vm("vm-3", "c", on))
	if len(got) != 0 || len(w.props) != 5 {
		t.Fatalf("initial: %d changes, %d objects", len(got), len(w.props))
	}

	// Everything again, in two pages: vm-2 now off, vm-3 gone, vm-4 new.
	batch(true, true, enter(dc, "name", "DC0"), enter(folder, "name", "vm", "parent", dc), vm("vm-4", "d", on))
	batch(true, false, vm("vm-1", "a", on), vm("vm-2", "b", off))
	var changed, deleted []string
	for _, ch := range got {
		switch {
		case ch.VM != nil:
			changed = append(changed, ch.VM.ID+"="+ch.VM.PowerState)
			if ch.VM.Path != "/DC0/vm/"+ch.VM.Name || ch.VM.Datacenter != "datacenter-2" {
				t.Errorf("vm %+v", ch.VM)
			}
		case ch.DeletedVM != "":
			deleted = append(deleted, ch.DeletedVM)
		case ch.Resync:
			t.Error("resync for an unchanged tree")
		}
	}
	if len(changed) != 1 || changed[0] != "vm-2=stopped" || len(deleted) != 1 || deleted[0] != "vm-3" {
		t.Fatalf("changed %v, deleted %v; want vm-2 stopped and vm-3 deleted", changed, deleted)
	}
	if _, ok := w.props[vmRef("vm-4")]; !ok {
		t.Fatal("vm-4, sent in the first page, was dropped")
	}
}
