package vsphere

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// watchWait is how long one WaitForUpdatesEx waits on the server for a
// change; the loop goes round at least this often, so a lost connection
// or an ended ctx is noticed.
const watchWait = 3

// Watch follows the inventory with a property-collector filter over the
// same container view Inventory reads, and calls fn for each change:
//   - a VM made, changed or gone: Change{VM} (the whole VM) or Change{DeletedVM};
//   - a host added or changed: Change{Host};
//   - a host gone, or a change to a datacenter, cluster, folder, vApp or
//     network (which may move VMs' paths): Change{Resync}.
//
// Once the filter's first full answer is in, Watch sends one Resync: what
// changed between the caller's last Inventory and the start of the watch
// is not known otherwise. Datastore capacity changes are not followed.
// Watch returns ctx's error when ctx ends, and an error wrapping
// provider.ErrUnreachable (or ErrAuth, when the session ended) when the
// connection is lost.
func (p *Provider) Watch(ctx context.Context, fn func(provider.Change)) error {
	c, err := p.conn()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	v, err := p.view(ctx, c, viewInventory)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	pc, err := property.DefaultCollector(c).Create(ctx)
	if err != nil {
		return fmt.Errorf("watch: create property collector: %w", classify(err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
		defer cancel()
		_ = pc.Destroy(dctx)
	}()
	_, err = pc.CreateFilter(ctx, types.CreateFilter{
		Spec:           viewFilter(v.Reference(), propSpecs(withVMs)),
		PartialUpdates: false, // report whole properties, as named in the filter
	})
	if err != nil {
		return fmt.Errorf("watch: create filter: %w", classify(err))
	}

	w := &watcher{p: p, c: c, fn: fn, ix: newIndex(0),
		props:   map[types.ManagedObjectReference]map[string]any{},
		entered: map[types.ManagedObjectReference]bool{},
	}
	req := types.WaitForUpdatesEx{
		This:    pc.Reference(),
		Options: &types.WaitOptions{MaxWaitSeconds: types.NewInt32(watchWait)},
	}
	started := false
	for {
		res, err := methods.WaitForUpdatesEx(ctx, c, &req)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("watch: wait for updates: %w", classify(err))
		}
		set := res.Returnval
		if set == nil {
			continue // nothing changed in watchWait
		}
		req.Version = set.Version
		truncated := set.Truncated != nil && *set.Truncated
		if err := w.apply(ctx, set.FilterSet, started, truncated); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		if !started && !truncated {
			started = true
			p.log.Debug("watch started", "objects", len(w.props))
			fn(provider.Change{Resync: true})
		}
	}
}

// watcher keeps the properties of every object the filter reports, so a
// change to a few properties still yields a whole VM.
type watcher struct {
	p     *Provider
	c     *vim25.Client
	fn    func(provider.Change)
	ix    *index
	props map[types.ManagedObjectReference]map[string]any
	// The objects entered since the last complete answer, and whether
	// one of them was known already: the server is sending it all again.
	entered   map[types.ManagedObjectReference]bool
	resending bool
}

// known is every property path the filter names, by object type.
var known = func() map[string]bool {
	m := map[string]bool{}
	for _, list := range [][]string{vmProps, hostProps, treeProps, vappProps} {
		for _, p := range list {
			m[p] = true
		}
	}
	return m
}()

// apply takes in one batch of updates and, when emit, reports them.
// truncated says more of the same answer follows.
func (w *watcher) apply(ctx context.Context, sets []types.PropertyFilterUpdate, emit, truncated bool) error {
	var touched []types.ObjectUpdate
	tree := false // the tree changed: memoized paths are stale
	resync := false
	for _, fs := range sets {
		for _, u := range fs.ObjectSet {
			ref := u.Obj
			if u.Kind == types.ObjectUpdateKindLeave {
				delete(w.props, ref)
				w.ix.remove(ref)
				tree = true
				touched = append(touched, u)
				continue
			}
			if u.Kind == types.ObjectUpdateKindEnter {
				if w.props[ref] != nil && emit {
					w.resending = true
				}
				w.entered[ref] = true
			}
			changed, err := w.update(ctx, u)
			if err != nil {
				return err
			}
			if !changed {
				continue
			}
			oc := w.content(ref)
			if w.ix.put(&oc) {
				tree = true
				if ref.Type == "HostSystem" && u.Kind == types.ObjectUpdateKindModify {
					resync = true // the host moved: its VMs' cluster changed
				}
			}
			touched = append(touched, u)
		}
	}
	if !truncated {
		if w.resending {
			// The server sent the whole view again (vcsim does when the
			// view changes, and may then drop the leave of an object
			// deleted at that moment): what it did not send is gone.
			for ref := range w.props {
				if !w.entered[ref] {
					delete(w.props, ref)
					w.ix.remove(ref)
					tree = true
					touched = append(touched, types.ObjectUpdate{Obj: ref, Kind: types.ObjectUpdateKindLeave})
				}
			}
		}
		w.resending = false
		clear(w.entered)
	}
	if tree {
		w.ix.invalidate()
	}
	if !emit {
		return nil
	}
	for _, u := range touched {
		ref := u.Obj
		leave := u.Kind == types.ObjectUpdateKindLeave
		switch {
		case ref.Type == "VirtualMachine" && leave:
			w.fn(provider.Change{DeletedVM: ref.Value})
		case ref.Type == "VirtualMachine":
			oc := w.content(ref)
			vm := w.ix.vm(&oc)
			w.fn(provider.Change{VM: &vm})
		case ref.Type == "HostSystem" && !leave:
			oc := w.content(ref)
			h := w.ix.host(&oc)
			w.fn(provider.Change{Host: &h})
		default:
			resync = true
		}
	}
	if resync {
		w.fn(provider.Change{Resync: true})
	}
	return nil
}

// update applies one enter or modify to the object's properties, and
// reports whether they changed (an object sent again as it was has not).
func (w *watcher) update(ctx context.Context, u types.ObjectUpdate) (bool, error) {
	old := w.props[u.Obj]
	m := old
	if m == nil || u.Kind == types.ObjectUpdateKindEnter {
		m = make(map[string]any, len(u.ChangeSet))
	}
	w.props[u.Obj] = m
	refetch := false
	for _, ch := range u.ChangeSet {
		switch {
		case !known[ch.Name]:
			refetch = true // a nested change: read the object again
		case ch.Op == types.PropertyChangeOpAssign:
			m[ch.Name] = ch.Val
		case ch.Op == types.PropertyChangeOpRemove, ch.Op == types.PropertyChangeOpIndirectRemove:
			delete(m, ch.Name)
		default:
			refetch = true
		}
	}
	if refetch {
		if err := w.refetch(ctx, u.Obj); err != nil {
			return false, err
		}
	}
	if u.Kind == types.ObjectUpdateKindEnter && old != nil {
		return !reflect.DeepEqual(old, w.props[u.Obj]), nil
	}
	return true, nil
}

// content rebuilds an object's properties as a retrieval returns them.
func (w *watcher) content(ref types.ManagedObjectReference) types.ObjectContent {
	m := w.props[ref]
	oc := types.ObjectContent{Obj: ref, PropSet: make([]types.DynamicProperty, 0, len(m))}
	for name, val := range m {
		oc.PropSet = append(oc.PropSet, types.DynamicProperty{Name: name, Val: val})
	}
	return oc
}

// refetch reads all the watched properties of one object again.
func (w *watcher) refetch(ctx context.Context, ref types.ManagedObjectReference) error {
	paths := treeProps
	switch ref.Type {
	case "VirtualMachine":
		paths = vmProps
	case "HostSystem":
		paths = hostProps
	case "VirtualApp":
		paths = vappProps
	}
	m, err := props(ctx, w.c, ref, paths...)
	if errors.Is(err, provider.ErrNotFound) {
		return nil // gone meanwhile: its leave follows
	}
	if err != nil {
		return fmt.Errorf("read %s again: %w", ref.Value, err)
	}
	w.props[ref] = m
	return nil
}
