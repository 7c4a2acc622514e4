package vsphere

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// snapshotEntry is one snapshot of a VM's tree, flattened.
type snapshotEntry struct {
	ref  types.ManagedObjectReference
	snap provider.Snapshot
}

// snapshotTree reads a VM's snapshots, parents before their children.
func snapshotTree(ctx context.Context, c *vim25.Client, ref types.ManagedObjectReference) ([]snapshotEntry, error) {
	m, err := props(ctx, c, ref, "snapshot")
	if err != nil {
		return nil, err
	}
	info, ok := m["snapshot"].(types.VirtualMachineSnapshotInfo)
	if !ok {
		return nil, nil // no snapshots
	}
	var out []snapshotEntry
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(trees []types.VirtualMachineSnapshotTree) {
		for i := range trees {
			t := &trees[i]
			out = append(out, snapshotEntry{ref: t.Snapshot, snap: provider.Snapshot{
				Name:        t.Name,
				Description: t.Description,
				CreatedAt:   t.CreateTime,
				Current:     info.CurrentSnapshot != nil && *info.CurrentSnapshot == t.Snapshot,
			}})
			walk(t.ChildSnapshotList)
		}
	}
	walk(info.RootSnapshotList)
	return out, nil
}

// findSnapshot returns the VM's snapshot named name. CreateSnapshot keeps
// names unique; a name that several snapshots share (snapshots taken
// outside Polyvisor) is refused as ambiguous.
func (p *Provider) findSnapshot(ctx context.Context, id, name string) (*object.VirtualMachine, types.ManagedObjectReference, error) {
	c, vm, _, err := p.machine(ctx, id)
	if err != nil {
		return nil, types.ManagedObjectReference{}, err
	}
	tree, err := snapshotTree(ctx, c, vm.Reference())
	if err != nil {
		return nil, types.ManagedObjectReference{}, err
	}
	var found []types.ManagedObjectReference
	for _, e := range tree {
		if e.snap.Name == name {
			found = append(found, e.ref)
		}
	}
	switch len(found) {
	case 0:
		return nil, types.ManagedObjectReference{}, fmt.Errorf("snapshot %q: %w", name, provider.ErrNotFound)
	case 1:
		return vm, found[0], nil
	}
	return nil, types.ManagedObjectReference{}, fmt.Errorf("snapshot name %q is ambiguous: %d snapshots have it", name, len(found))
}

// Snapshots lists a VM's snapshots, the whole tree flattened, parents
// before their children.
func (p *Provider) Snapshots(ctx context.Context, id string) ([]provider.Snapshot, error) {
	c, vm, _, err := p.machine(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("list snapshots of vm %s: %w", id, err)
	}
	tree, err := snapshotTree(ctx, c, vm.Reference())
	if err != nil {
		return nil, fmt.Errorf("list snapshots of vm %s: %w", id, err)
	}
	out := make([]provider.Snapshot, 0, len(tree))
	for _, e := range tree {
		out = append(out, e.snap)
	}
	return out, nil
}

// CreateSnapshot takes a snapshot of the VM's disks (no memory, no
// quiescing). A name the VM already has is refused.
func (p *Provider) CreateSnapshot(ctx context.Context, id, name, description string) error {
	if name == "" {
		return fmt.Errorf("snapshot vm %s: no snapshot name", id)
	}
	c, vm, _, err := p.machine(ctx, id)
	if err != nil {
		return fmt.Errorf("snapshot vm %s: %w", id, err)
	}
	tree, err := snapshotTree(ctx, c, vm.Reference())
	if err != nil {
		return fmt.Errorf("snapshot vm %s: %w", id, err)
	}
	for _, e := range tree {
		if e.snap.Name == name {
			return fmt.Errorf("snapshot vm %s: snapshot %q: %w", id, name, provider.ErrExists)
		}
	}
	if err := await(ctx)(vm.CreateSnapshot(ctx, name, description, false, false)); err != nil {
		return fmt.Errorf("snapshot vm %s as %q: %w", id, name, err)
	}
	p.log.Info("snapshot taken", "vm", id, "snapshot", name)
	return nil
}

// RevertSnapshot brings the VM back to the named snapshot.
func (p *Provider) RevertSnapshot(ctx context.Context, id, name string) error {
	vm, snap, err := p.findSnapshot(ctx, id, name)
	if err != nil {
		return fmt.Errorf("revert vm %s to snapshot: %w", id, err)
	}
	req := types.RevertToSnapshot_Task{This: snap, SuppressPowerOn: types.NewBool(false)}
	res, err := methods.RevertToSnapshot_Task(ctx, vm.Client(), &req)
	if err != nil {
		return fmt.Errorf("revert vm %s to snapshot %q: %w", id, name, classify(err))
	}
	if err := await(ctx)(object.NewTask(vm.Client(), res.Returnval), nil); err != nil {
		return fmt.Errorf("revert vm %s to snapshot %q: %w", id, name, err)
	}
	p.log.Info("snapshot reverted", "vm", id, "snapshot", name)
	return nil
}

// DeleteSnapshot removes the named snapshot; its children are kept and
// its disk changes consolidated into them.
func (p *Provider) DeleteSnapshot(ctx context.Context, id, name string) error {
	vm, snap, err := p.findSnapshot(ctx, id, name)
	if err != nil {
		return fmt.Errorf("delete snapshot of vm %s: %w", id, err)
	}
	req := types.RemoveSnapshot_Task{This: snap, RemoveChildren: false, Consolidate: types.NewBool(true)}
	res, err := methods.RemoveSnapshot_Task(ctx, vm.Client(), &req)
	if err != nil {
		return fmt.Errorf("delete snapshot %q of vm %s: %w", name, id, classify(err))
	}
	if err := await(ctx)(object.NewTask(vm.Client(), res.Returnval), nil); err != nil {
		return fmt.Errorf("delete snapshot %q of vm %s: %w", name, id, err)
	}
	p.log.Info("snapshot deleted", "vm", id, "snapshot", name)
	return nil
}

// Console acquires a WebMKS ticket for a running VM. The ticket is good
// for one connection, for a short while.
func (p *Provider) Console(ctx context.Context, id string) (*provider.Console, error) {
	_, vm, st, err := p.machine(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("console of vm %s: %w", id, err)
	}
	if st.power != types.VirtualMachinePowerStatePoweredOn {
		return nil, fmt.Errorf("console of vm %s: %w", id, badState(st, provider.PowerRunning))
	}
	t, err := vm.AcquireTicket(ctx, string(types.VirtualMachineTicketTypeWebmks))
	if err != nil {
		return nil, fmt.Errorf("console of vm %s: webmks ticket: %w", id, classify(err))
	}
	con := &provider.Console{Type: "webmks", Host: t.Host, Port: int(t.Port), Ticket: t.Ticket, URL: t.Url}
	if con.Host == "" {
		// The ticket is for the endpoint itself.
		p.mu.Lock()
		if p.url != nil {
			con.Host = p.url.Hostname()
			if port := p.url.Port(); port != "" && con.Port == 0 {
				con.Port, _ = strconv.Atoi(port)
			}
		}
		p.mu.Unlock()
	}
	if con.Port == 0 {
		con.Port = 443
	}
	if con.URL == "" {
		u := url.URL{Scheme: "wss", Host: net.JoinHostPort(con.Host, strconv.Itoa(con.Port)),
			Path: "/ticket/" + con.Ticket}
		con.URL = u.String()
	}
	return con, nil
}
