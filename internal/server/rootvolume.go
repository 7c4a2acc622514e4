package server

import (
	"context"
	"fmt"
	"slices"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/placement"
	"github.com/polyvisor/polyvisor/internal/store"
)

// rootVolume is what a VM create does with its root disk when that is a
// volume: attach an existing one (rootVolume) or make one from disks[0]'s
// image in a pool (rootPool). Either is written in the create's own
// transaction, so a create that fails leaves no volume made or attached.
type rootVolume struct {
	name string
	pool *api.Pool
	// made is the volume's create request when the create makes it.
	made *api.VolumeCreate
	// deleteWithVM deletes a made volume with the VM.
	deleteWithVM bool
	// sizeMiB is what a made volume counts against volumeMiB.
	sizeMiB int64
}

// rootVolumeSuffix names the root volume a create makes: "<vm>-root".
const rootVolumeSuffix = "-root"

// planRootVolume checks a create's root-volume fields; for rootPool it
// takes disks[0] out of the request (the volume is made from it). It
// returns nil when the VM's root disk is its own.
func (s *Server) planRootVolume(project string, req *api.VMCreate) (*rootVolume, error) {
	switch {
	case req.RootVolume == "" && req.RootPool == "":
		if req.DeleteRootVolume {
			return nil, api.Invalid("deleteRootVolume", "applies to the root volume a create makes (rootPool)")
		}
		return nil, nil
	case req.RootVolume != "" && req.RootPool != "":
		return nil, api.Invalid("rootVolume", "name a volume to boot from, or a pool to make the root volume in (rootPool), not both")
	case req.Provider != "" || req.Template != "":
		return nil, api.Unprocessable("a vm of a connected estate boots from its template: rootVolume and rootPool are for Polyvisor's own vms")
	}
	if req.RootVolume != "" {
		if req.DeleteRootVolume {
			return nil, api.Invalid("deleteRootVolume", "applies to the root volume a create makes (rootPool), never to an existing volume")
		}
		if err := validateName("rootVolume", req.RootVolume); err != nil {
			return nil, err
		}
		v, ok := s.volumes.Get(api.Key(project, req.RootVolume))
		if !ok {
			return nil, &api.Error{Code: api.CodeUnprocessable, Field: "rootVolume", Message: fmt.Sprintf("volume %q does not exist in project %q", req.RootVolume, project)}
		}
		if err := rootVolumeUsable(v); err != nil {
			return nil, err
		}
		pool, ok := s.pools.Get(v.Spec.Pool)
		if !ok {
			return nil, api.Unprocessable("volume %q's pool %q is gone", v.Name, v.Spec.Pool)
		}
		return &rootVolume{name: v.Name, pool: pool}, nil
	}
	if len(req.Disks) == 0 || req.Disks[0].Image == "" {
		return nil, api.Invalid("disks", "rootPool makes the root volume from disks[0]'s image: give one (--image)")
	}
	name := req.Name + rootVolumeSuffix
	if err := validateName("name", name); err != nil {
		return nil, api.Invalid("name", "%q is too long for its root volume %q: use at most %d characters", req.Name, name, 63-len(rootVolumeSuffix))
	}
	if _, ok := s.volumes.Get(api.Key(project, name)); ok {
		return nil, api.Conflict("volume %q already exists: boot from it with rootVolume, or delete it", name)
	}
	mk := &api.VolumeCreate{Name: name, Pool: req.RootPool, SizeMiB: req.Disks[0].SizeMiB, Source: &api.VolumeSource{Image: req.Disks[0].Image}}
	pool, spec, err := s.volumeSpec(project, mk)
	if err != nil {
		return nil, rootPoolField(err)
	}
	req.Disks = req.Disks[1:]
	return &rootVolume{name: name, pool: pool, made: mk, deleteWithVM: req.DeleteRootVolume, sizeMiB: spec.SizeMiB}, nil
}

// rootPoolField names the create's field in an error about the volume
// it makes.
func rootPoolField(err error) error {
	if ae, ok := err.(*api.Error); ok && ae.Field == "pool" {
		out := *ae
		out.Field = "rootPool"
		return &out
	}
	return err
}

// rootVolumeUsable refuses a volume a VM cannot boot from now.
func rootVolumeUsable(v *api.Volume) error {
	switch {
	case v.Spec.Deletion != nil:
		return api.Conflict("volume %q is being deleted", v.Name)
	case v.Spec.AttachedTo != "":
		return api.Conflict("volume %q is attached to vm %q: detach it to boot another vm from it", v.Name, v.Spec.AttachedTo)
	case !ready(v):
		return api.Conflict("volume %q is %s: boot from it once its host has made it", v.Name, volumeView(v).Status.State)
	}
	return nil
}

// filter keeps the hosts that see the root volume's pool: a dir pool's
// host, or the hosts of a shared one.
func (rv *rootVolume) filter(f placement.Filter) placement.Filter {
	if rv == nil {
		return f
	}
	hosts := rv.pool.Spec.Hosts
	return func(h *api.Host) bool { return f(h) && slices.Contains(hosts, h.Name) }
}

// shared tells whether the root volume's pool allows HA restart: a
// shared filesystem, whose image locks keep a second QEMU out (an nbd
// export has no such lock against a second client).
func (rv *rootVolume) shared() bool { return rv != nil && rv.pool.Spec.Kind == api.PoolShared }

// ops are the root volume's writes in the create of vm, and the
// attachment to put in its spec; they are read again at each attempt.
func (s *Server) rootVolumeOps(project string, vm *api.VM, rv *rootVolume) ([]store.Op, api.VolumeAttachment, error) {
	key := api.Key(project, rv.name)
	if rv.made == nil {
		cur, ok := s.volumes.Get(key)
		if !ok {
			return nil, api.VolumeAttachment{}, &api.Error{Code: api.CodeUnprocessable, Field: "rootVolume", Message: fmt.Sprintf("volume %q does not exist in project %q", rv.name, project)}
		}
		if err := rootVolumeUsable(cur); err != nil {
			return nil, api.VolumeAttachment{}, err
		}
		if !slices.Contains(rv.pool.Spec.Hosts, vm.Spec.Host) || (rv.pool.Spec.Kind == api.PoolDir && cur.Spec.Host != vm.Spec.Host) {
			return nil, api.VolumeAttachment{}, api.Unprocessable("host %q does not see volume %q's pool %q", vm.Spec.Host, rv.name, cur.Spec.Pool)
		}
		next := store.Clone(cur)
		next.Spec.AttachedTo = vm.Name
		next.Generation++
		next.UpdatedAt = vm.CreatedAt
		a := attachmentOf(next)
		a.Boot = true
		return []store.Op{s.volumes.OpUpdate(key, next, cur.Version)}, a, nil
	}
	pool, spec, err := s.volumeSpec(project, rv.made)
	if err != nil {
		return nil, api.VolumeAttachment{}, rootPoolField(err)
	}
	if pool.Spec.Kind == api.PoolDir {
		spec.Host = pool.Spec.Hosts[0]
	} else if pool.Spec.Kind == api.PoolShared && slices.Contains(pool.Spec.Hosts, vm.Spec.Host) {
		spec.Host = vm.Spec.Host // made where it first runs
	}
	spec.AttachedTo = vm.Name
	v := &api.Volume{
		Meta:   api.Meta{Name: rv.name, Project: project, UID: api.NewUID(), Generation: 1, CreatedAt: vm.CreatedAt, UpdatedAt: vm.CreatedAt},
		Spec:   spec,
		Status: api.VolumeStatus{State: api.VolumePending},
	}
	placeVolume(pool, v)
	a := attachmentOf(v)
	a.Boot, a.DeleteWithVM = true, rv.deleteWithVM
	return []store.Op{s.volumes.OpCreate(key, v), s.pools.OpUpdate(pool.Name, pool, pool.Version)}, a, nil
}

// auditRootVolume records the root volume a create made or attached, as
// a volume request of its own would be.
func (s *Server) auditRootVolume(ctx context.Context, project, vm string, rv *rootVolume, opID string) {
	if rv == nil {
		return
	}
	action, msg := "volume.attach", fmt.Sprintf("attached as the root disk of vm %q", vm)
	if rv.made != nil {
		action, msg = "volume.create", fmt.Sprintf("made from image %q in pool %q as the root disk of vm %q", rv.made.Source.Image, rv.made.Pool, vm)
		if rv.deleteWithVM {
			msg += ", deleted with it"
		}
	}
	s.appendAudit(ctx, &api.AuditRecord{
		Actor: actorOf(auth.FromContext(ctx)), Action: action, Project: project,
		Resource: api.Ref{Kind: "volume", Name: rv.name, Project: project}, OperationID: opID,
		Outcome: api.AuditSuccess, Message: msg,
	})
}

// bootAttachment is the VM's root volume, if it boots from one.
func bootAttachment(vm *api.VM) (api.VolumeAttachment, bool) {
	for _, a := range vm.Spec.Volumes {
		if a.Boot {
			return a, true
		}
	}
	return api.VolumeAttachment{}, false
}

// haOfRootVolume checks the VM's HA policy against its root volume: a VM
// restarted on another host needs its root disk where that host sees it.
// A project default of restart does not apply to a VM whose root volume
// is in a dir pool.
func haOfRootVolume(req *api.VMCreate, rv *rootVolume, ha string) (string, error) {
	if rv == nil || rv.shared() || ha != api.HARestart {
		return ha, nil
	}
	if req.HA == api.HARestart {
		return "", haRefused("vm %q would boot from volume %q of pool %q, which is not shared: only a vm whose disks are all volumes of a shared pool can be restarted on another host", req.Name, rv.name, rv.pool.Name)
	}
	return "", nil
}

// auditSystemAs records something Polyvisor did on its own, as name.
func (s *Server) auditSystemAs(ctx context.Context, name, action string, target api.Ref, msg string) {
	s.appendAudit(ctx, &api.AuditRecord{
		Actor: api.AuditActor{Kind: auth.KindSystem, Name: name}, Action: action, Project: target.Project,
		Resource: target, Outcome: api.AuditSuccess, Message: msg,
	})
}
