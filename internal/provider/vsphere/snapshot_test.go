package vsphere

import (
	"errors"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// snapshotNames lists a VM's snapshots as govmomi sees them, and the
// current one.
func (e *simEnv) snapshotNames(t *testing.T, id string) (names []string, current string) {
	t.Helper()
	info := e.vm(t, id, "snapshot").Snapshot
	if info == nil {
		return nil, ""
	}
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(trees []types.VirtualMachineSnapshotTree) {
		for _, s := range trees {
			names = append(names, s.Name)
			if info.CurrentSnapshot != nil && *info.CurrentSnapshot == s.Snapshot {
				current = s.Name
			}
			walk(s.ChildSnapshotList)
		}
	}
	walk(info.RootSnapshotList)
	return names, current
}

func TestSnapshots(t *testing.T) {
	e := newSim(t, testModel())
	p := e.connect(t)
	ctx := testCtx(t)
	id := e.vmByName(t, "DC1_C0_RP0_VM0").Reference().Value

	list, err := p.Snapshots(ctx, id)
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("snapshots of a fresh vm: %+v", list)
	}
	must(t, p.CreateSnapshot(ctx, id, "base", "before the upgrade"))
	must(t, p.CreateSnapshot(ctx, id, "upgraded", ""))
	if err := p.CreateSnapshot(ctx, id, "base", "again"); !errors.Is(err, provider.ErrExists) {
		t.Fatalf("a second snapshot named base: err = %v, want ErrExists", err)
	}

	list, err = p.Snapshots(ctx, id)
	must(t, err)
	if len(list) != 2 || list[0].Name != "base" || list[0].Description != "before the upgrade" || list[0].Current ||
		list[1].Name != "upgraded" || !list[1].Current || list[0].CreatedAt.IsZero() {
		t.Fatalf("snapshots %+v", list)
	}
	names, current := e.snapshotNames(t, id)
	if len(names) != 2 || current != "upgraded" {
		t.Fatalf("govmomi sees %q, current %q", names, current)
	}

	must(t, p.RevertSnapshot(ctx, id, "base"))
	if _, current := e.snapshotNames(t, id); current != "base" {
		t.Fatalf("after revert govmomi sees current %q", current)
	}
	list, err = p.Snapshots(ctx, id)
	must(t, err)
	if !list[0].Current || list[1].Current {
		t.Fatalf("after revert: %+v", list)
	}

	// Removing the current snapshot when it is a root of the tree panics
	// vcsim (it assigns a nil currentSnapshot): delete others only.
	must(t, p.CreateSnapshot(ctx, id, "third", ""))
	must(t, p.DeleteSnapshot(ctx, id, "upgraded"))
	names, current = e.snapshotNames(t, id)
	if len(names) != 2 || names[0] != "base" || names[1] != "third" || current != "third" {
		t.Fatalf("after deleting upgraded govmomi sees %q, current %q", names, current)
	}
	must(t, p.DeleteSnapshot(ctx, id, "base"))
	names, current = e.snapshotNames(t, id)
	if len(names) != 1 || names[0] != "third" || current != "third" {
		t.Fatalf("after deleting base govmomi sees %q, current %q", names, current)
	}
	list, err = p.Snapshots(ctx, id)
	must(t, err)
	if len(list) != 1 || list[0].Name != "third" || !list[0].Current {
		t.Fatalf("snapshots %+v", list)
	}

	for what, err := range map[string]error{
		"revert": p.RevertSnapshot(ctx, id, "nope"),
		"delete": p.DeleteSnapshot(ctx, id, "nope"),
	} {
		if !errors.Is(err, provider.ErrNotFound) {
			t.Errorf("%s an unknown snapshot: err = %v, want ErrNotFound", what, err)
		}
	}
	if _, err := p.Snapshots(ctx, "vm-nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("snapshots of an unknown vm: err = %v, want ErrNotFound", err)
	}
}
