package server

import (
	"context"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/store"
)

// TestVMRemovalReleasesVolumesAtOnce: when a host reports a VM removed,
// the VM's record goes in the same store transaction (one revision) as
// its volumes' release: the root volume made with it is detached and
// marked for deletion, a volume it booted from is detached. Two writes
// would let a crash between them leave a volume attached to a VM that no
// longer exists, which a new VM of the same name would find attached.
func TestVMRemovalReleasesVolumesAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.super.CreatePool(ctx, api.PoolCreate{Name: "h2dir", Kind: api.PoolDir, Path: "/srv/h2", Hosts: []string{"h2"}, Projects: []string{"pa"}}); err != nil {
		t.Fatal(err)
	}
	m := e.as(api.RoleMember, "pa")
	made := api.VMCreate{Name: "rv", VCPUs: 1, MemoryMiB: 128, Disks: []api.Disk{{Name: "root", Image: "img"}}, RootPool: "h2dir", DeleteRootVolume: true}
	if _, err := m.CreateVM(ctx, made, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateVolume(ctx, api.VolumeCreate{Name: "boot1", Pool: "h2dir", SizeMiB: 8}); err != nil {
		t.Fatal(err)
	}
	readyVolume(t, e, "h2", "pa/boot1", 1)
	if _, err := m.CreateVM(ctx, api.VMCreate{Name: "rv3", VCPUs: 1, MemoryMiB: 128, RootVolume: "boot1"}, client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h2 := e.client(e.tokens["h2"], "")
	for _, key := range []string{"pa/rv", "pa/rv3"} {
		e.ctlObserved(t, e.tokens["h2"], key)
	}

	vmCh := e.s.vms.Subscribe(ctx)
	volCh := e.s.volumes.Subscribe(ctx)
	for _, name := range []string{"rv", "rv3"} {
		if _, err := m.DeleteVM(ctx, name, false); err != nil {
			t.Fatal(err)
		}
		ctlEventually(t, 10*time.Second, "vm "+name+" is being deleted", func() error {
			if vm, ok := e.s.vms.Get("pa/" + name); !ok || vm.Spec.Deletion == nil {
				return errString("no deletion yet")
			}
			return nil
		})
		if err := h2.VMRemoved(ctx, "pa/"+name); err != nil {
			t.Fatalf("reporting %s removed: %v", name, err)
		}
	}
	gone := map[string]int64{}                         // VM name -> revision of its removal
	released := map[string]*store.Change[api.Volume]{} // volume -> its detach
	deadline := time.After(10 * time.Second)
	for len(gone) < 2 || len(released) < 2 {
		select {
		case ch := <-vmCh:
			if ch.Type == store.Delete {
				gone[ch.Obj.Name] = ch.Rev
			}
		case ch := <-volCh:
			if ch.Type != store.Delete && ch.Prev != nil && ch.Prev.Spec.AttachedTo != "" && ch.Obj.Spec.AttachedTo == "" {
				released[ch.Obj.Name] = &ch
			}
		case <-deadline:
			t.Fatalf("removals %v, releases %v", gone, released)
		}
	}
	for vol, vm := range map[string]string{"rv-root": "rv", "boot1": "rv3"} {
		if ch := released[vol]; ch.Rev != gone[vm] {
			t.Errorf("volume %s released apart from vm %s's removal (revision %d, the vm's %d)", vol, vm, ch.Rev, gone[vm])
		}
	}
	if v := released["rv-root"]; v != nil && v.Obj.Spec.Deletion == nil {
		t.Errorf("the root volume made with rv is not being deleted")
	}
	if v := released["boot1"]; v != nil && v.Obj.Spec.Deletion != nil {
		t.Errorf("boot1, which rv3 booted from, is being deleted")
	}
}
