package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/labels"
	"github.com/polyvisor/polyvisor/internal/store"
)

// volumeRoutes: a project's volumes. Their files are made, grown and
// deleted by their host's agent (on its watch); attaching one writes it
// into its VM's spec, and the VM's host plugs it in.
func (s *Server) volumeRoutes() []route {
	read, manage := auth.In(auth.PermVolumeRead), auth.In(auth.PermVolumeManage)
	return []route{
		{method: "GET", path: "/v1/volumes", rule: read, handler: s.listVolumes},
		{method: "POST", path: "/v1/volumes", rule: manage, handler: s.createVolume},
		{method: "GET", path: "/v1/volumes/{name}", rule: read, handler: s.getVolume},
		{method: "DELETE", path: "/v1/volumes/{name}", rule: manage, handler: s.deleteVolume},
		{method: "POST", path: "/v1/volumes/{name}/attach", rule: manage, handler: s.attachVolume},
		{method: "POST", path: "/v1/volumes/{name}/detach", rule: manage, handler: s.detachVolume},
		{method: "POST", path: "/v1/volumes/{name}/grow", rule: manage, handler: s.growVolume},
		{method: "PUT", path: "/v1/volumes/{name}/limits", rule: manage, handler: s.setVolumeLimits},
		{method: "POST", path: "/v1/volumes/{name}/snapshots", rule: manage, handler: s.snapshotVolume},
		{method: "DELETE", path: "/v1/volumes/{name}/snapshots/{snapshot}", rule: manage, handler: s.deleteVolumeSnapshot},
		{method: "PUT", path: "/v1/agent/hosts/{name}/volumes/{project}/{volume}/status", rule: auth.Host, handler: s.putVolumeStatus, hostOf: pathHost},
		{method: "POST", path: "/v1/agent/hosts/{name}/volumes/{project}/{volume}/removed", rule: auth.Host, handler: s.volumeRemoved, hostOf: pathHost},
	}
}

// volumeView is a volume as the API shows it: its state says whether it
// is attached or being deleted, whatever its host last reported.
func volumeView(v *api.Volume) api.Volume {
	out := *v
	switch {
	case v.Spec.Deletion != nil:
		out.Status.State = api.VolumeDeleting
	case v.Status.State == "":
		out.Status.State = api.VolumePending
	case v.Status.State == api.VolumeReady && v.Spec.AttachedTo != "":
		out.Status.State = api.VolumeAttached
	}
	return out
}

func (s *Server) volumeKey(r *http.Request) string {
	return api.Key(requestOf(r).project, r.PathValue("name"))
}

// volumeOf is the volume the path names in the request's project; one of
// another project does not exist for the request.
func (s *Server) volumeOf(r *http.Request) (*api.Volume, error) {
	v, ok := s.volumes.Get(s.volumeKey(r))
	if !ok {
		return nil, api.NotFound("volume", r.PathValue("name"))
	}
	return v, nil
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.volumes, func(q listQuery, v *api.Volume) bool {
		return s.inProject(r, v.Project, auth.PermVolumeRead) && q.sel.Matches(v.Labels) &&
			(q.State == "" || volumeView(v).Status.State == q.State)
	}, volumeView)
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) {
	v, err := s.volumeOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, volumeView(v))
}

// snapshotPath is the file of a volume's snapshot, beside the volume's.
func snapshotPath(v *api.Volume, snap string) string {
	return fmt.Sprintf("%s@%s.qcow2", v.Spec.Path[:len(v.Spec.Path)-len(".qcow2")], snap)
}

// ready tells whether a volume's host has carried out its spec.
func ready(v *api.Volume) bool {
	return v.Spec.Deletion == nil && v.Status.State == api.VolumeReady && v.Status.ObservedGeneration >= v.Generation
}

// volumeSpec checks a create against the pool and the source and returns
// the new volume's spec. Every error names its field.
func (s *Server) volumeSpec(project string, req *api.VolumeCreate) (*api.Pool, api.VolumeSpec, error) {
	var spec api.VolumeSpec
	if err := validateName("name", req.Name); err != nil {
		return nil, spec, err
	}
	if key, err := labels.Validate(req.Labels); err != nil {
		return nil, spec, api.Invalid("labels."+key, "%v", err)
	}
	if req.Pool == "" {
		return nil, spec, api.Invalid("pool", "is required")
	}
	pool, ok := s.pools.Get(req.Pool)
	if !ok || !slices.Contains(pool.Spec.Projects, project) {
		return nil, spec, &api.Error{Code: api.CodeUnprocessable, Field: "pool", Message: fmt.Sprintf("pool %q does not exist or is not granted to project %q", req.Pool, project)}
	}
	if req.SizeMiB < 0 || req.SizeMiB > maxDiskMiB {
		return nil, spec, api.Invalid("sizeMiB", "must be from 1 to %d MiB, not %d", int64(maxDiskMiB), req.SizeMiB)
	}
	if req.Limits.IOPS < 0 || req.Limits.BPS < 0 {
		return nil, spec, api.Invalid("limits", "iops and bps must not be negative")
	}
	spec = api.VolumeSpec{Pool: pool.Name, Host: req.Host, SizeMiB: req.SizeMiB, Limits: req.Limits}
	switch {
	case pool.Spec.Kind == api.PoolNBD && spec.Host != "" && spec.Host != pool.Spec.Hosts[0]:
		return nil, spec, api.Invalid("host", "an nbd pool's volumes are made on its serving host %q", pool.Spec.Hosts[0])
	case pool.Spec.Kind == api.PoolNBD:
		spec.Host = pool.Spec.Hosts[0]
	case spec.Host == "":
		spec.Host = pool.Spec.Hosts[0]
		for _, h := range pool.Spec.Hosts {
			if host, ok := s.hosts.Get(h); ok && host.Status.State == api.HostReady {
				spec.Host = h
				break
			}
		}
	case !slices.Contains(pool.Spec.Hosts, spec.Host):
		return nil, spec, api.Invalid("host", "host %q does not see pool %q", spec.Host, pool.Name)
	}
	var srcMiB int64
	if src := req.Source; src != nil {
		spec.Source = &api.VolumeSource{}
		switch {
		case src.Image != "" && (src.Volume != "" || src.Snapshot != ""):
			return nil, spec, api.Invalid("source", "name an image, or a volume (and a snapshot of it), not both")
		case src.Image != "":
			img, ok := s.imageResolver(project)(src.Image)
			if !ok || img.Kind != api.ImageDisk || img.State != api.ImageReady {
				return nil, spec, &api.Error{Code: api.CodeUnprocessable, Field: "source.image", Message: fmt.Sprintf("image %q is not a ready disk image of project %q or a public one", src.Image, project)}
			}
			spec.Source.Image = img.Key()
			srcMiB = (img.VirtualSizeBytes + 1<<20 - 1) >> 20
		case src.Volume != "":
			from, ok := s.volumes.Get(api.Key(project, src.Volume))
			if !ok {
				return nil, spec, &api.Error{Code: api.CodeUnprocessable, Field: "source.volume", Message: fmt.Sprintf("volume %q does not exist in project %q", src.Volume, project)}
			}
			if from.Spec.Pool != pool.Name {
				return nil, spec, api.Invalid("pool", "a clone or a volume from a snapshot is made in its source's pool %q", from.Spec.Pool)
			}
			spec.Source.Volume, spec.Host = src.Volume, from.Spec.Host
			srcMiB = from.Spec.SizeMiB
			if src.Snapshot == "" {
				if !ready(from) {
					return nil, spec, api.Conflict("volume %q is not ready: clone it once its host has made it", src.Volume)
				}
				if from.Spec.AttachedTo != "" {
					return nil, spec, api.Conflict("volume %q is attached to vm %q: detach it to clone it, or clone one of its snapshots", src.Volume, from.Spec.AttachedTo)
				}
				spec.Source.Path = from.Spec.Path
			} else {
				if !slices.Contains(from.Spec.Snapshots, src.Snapshot) || !slices.Contains(from.Status.Snapshots, src.Snapshot) {
					return nil, spec, &api.Error{Code: api.CodeUnprocessable, Field: "source.snapshot", Message: fmt.Sprintf("volume %q has no snapshot %q ready", src.Volume, src.Snapshot)}
				}
				spec.Source.Snapshot = src.Snapshot
				spec.Source.Path = snapshotPath(from, src.Snapshot)
			}
		case src.Snapshot != "":
			return nil, spec, api.Invalid("source.volume", "is required with source.snapshot")
		default:
			return nil, spec, api.Invalid("source", "name an image or a volume")
		}
	}
	switch {
	case req.SizeMiB == 0 && srcMiB == 0:
		return nil, spec, api.Invalid("sizeMiB", "is required for a blank volume")
	case req.SizeMiB == 0:
		spec.SizeMiB = srcMiB
	case req.SizeMiB < srcMiB:
		return nil, spec, api.Invalid("sizeMiB", "%d MiB is smaller than the source's %d MiB", req.SizeMiB, srcMiB)
	}
	return pool, spec, nil
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	project := rq.project
	rq.resource = api.Ref{Kind: "volume", Name: req.Name, Project: project}
	ctx := r.Context()
	for attempt := 1; ; attempt++ {
		pool, spec, err := s.volumeSpec(project, &req)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		key := api.Key(project, req.Name)
		if _, ok := s.volumes.Get(key); ok {
			s.writeError(w, r, api.Conflict("volume %q already exists", req.Name))
			return
		}
		conds, err := s.ctl.Quota.AdmitVolume(ctx, project, spec.SizeMiB)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		now := time.Now().UTC()
		v := &api.Volume{
			Meta:   api.Meta{Name: req.Name, Project: project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
			Spec:   spec,
			Status: api.VolumeStatus{State: api.VolumePending},
		}
		placeVolume(pool, v)
		// The pool is written too, so that a delete of the pool that
		// saw no volume cannot commit beside this create.
		txn := append([]store.Op{s.volumes.OpCreate(key, v), s.pools.OpUpdate(pool.Name, pool, pool.Version)}, conds...)
		if src := spec.Source; src != nil && src.Volume != "" {
			from, _ := s.volumes.Get(api.Key(project, src.Volume))
			txn = append(txn, s.volumes.OpCheck(from.Key(), from.Version))
		}
		_, err = s.st.Txn(ctx, txn...)
		if err == nil {
			v, _ = s.volumes.Get(key)
			writeJSON(w, http.StatusCreated, volumeView(v))
			return
		}
		var ke *store.KeyError
		if (admission.Retry(err) || (errors.As(err, &ke) && ke.Kind != "volumes") || (errors.As(err, &ke) && errors.Is(err, store.ErrConflict))) &&
			attempt < admission.MaxAttempts {
			if berr := admission.Backoff(ctx, attempt); berr == nil {
				continue
			}
		}
		if errors.Is(err, store.ErrExists) {
			err = api.Conflict("volume %q already exists", req.Name)
		}
		s.writeError(w, r, fmt.Errorf("storing volume %q: %w", req.Name, err))
		return
	}
}

// updateVolume changes a volume with change, again on a conflict; with
// vmChange, the VM it is attached to changes in the same transaction.
// change returns the quota conditions the write carries, if any.
func (s *Server) updateVolume(ctx context.Context, key string, change func(v *api.Volume) ([]store.Op, error),
	vmChange func(v *api.Volume, vm *api.VM) error) (*api.Volume, error) {
	for attempt := 1; ; attempt++ {
		cur, ok := s.volumes.Get(key)
		if !ok {
			_, name := api.SplitKey(key)
			return nil, api.NotFound("volume", name)
		}
		next := store.Clone(cur)
		conds, err := change(next)
		if err != nil {
			return nil, err
		}
		next.Generation++
		next.UpdatedAt = time.Now().UTC()
		txn := append([]store.Op{s.volumes.OpUpdate(key, next, cur.Version)}, conds...)
		if vmChange != nil && next.Spec.AttachedTo != "" {
			vm, ok := s.vms.Get(api.Key(next.Project, next.Spec.AttachedTo))
			if ok {
				nvm := store.Clone(vm)
				if err := vmChange(next, nvm); err != nil {
					return nil, err
				}
				nvm.Generation++
				nvm.UpdatedAt = next.UpdatedAt
				txn = append(txn, s.vms.OpUpdate(vm.Key(), nvm, vm.Version))
			}
		}
		_, err = s.st.Txn(ctx, txn...)
		if err == nil {
			v, _ := s.volumes.Get(key)
			return v, nil
		}
		if (errors.Is(err, store.ErrConflict) || admission.Retry(err)) && attempt < admission.MaxAttempts {
			if berr := admission.Backoff(ctx, attempt); berr == nil {
				continue
			}
		}
		return nil, fmt.Errorf("storing volume %q: %w", key, err)
	}
}

func (s *Server) answerVolume(w http.ResponseWriter, r *http.Request, v *api.Volume, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, volumeView(v))
}

// deleteVolume asks the volume's host to delete its file and snapshots;
// an attached volume, or one other volumes are being made from, stays.
func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request) {
	key := s.volumeKey(r)
	requestOf(r).resource = api.Ref{Kind: "volume", Name: r.PathValue("name"), Project: requestOf(r).project}
	v, err := s.updateVolume(r.Context(), key, func(v *api.Volume) ([]store.Op, error) {
		if v.Spec.AttachedTo != "" {
			return nil, api.Conflict("volume %q is attached to vm %q: detach it first", v.Name, v.Spec.AttachedTo)
		}
		if v.Spec.Deletion != nil {
			return nil, api.Conflict("volume %q is being deleted", v.Name)
		}
		if users := s.volumes.Select(func(o *api.Volume) bool {
			return o.Project == v.Project && o.Spec.Source != nil && o.Spec.Source.Volume == v.Name && !ready(o) && o.Spec.Deletion == nil
		}); len(users) > 0 {
			return nil, api.Conflict("volume %q is being copied into volume %q: delete it once that is ready", v.Name, users[0].Name)
		}
		v.Spec.Deletion = &api.Deletion{RequestedAt: time.Now().UTC()}
		return nil, nil
	}, nil)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, volumeView(v))
}

func (s *Server) growVolume(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeGrow
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "volume", Name: r.PathValue("name"), Project: rq.project}
	v, err := s.updateVolume(r.Context(), s.volumeKey(r), func(v *api.Volume) ([]store.Op, error) {
		if v.Spec.Deletion != nil {
			return nil, api.Conflict("volume %q is being deleted", v.Name)
		}
		if v.Spec.Export != "" && v.Spec.AttachedTo != "" {
			// QEMU's nbd client reads an export's size when it connects.
			return nil, api.Conflict("volume %q of an nbd pool is attached to vm %q: detach it to grow it", v.Name, v.Spec.AttachedTo)
		}
		if req.SizeMiB <= v.Spec.SizeMiB || req.SizeMiB > maxDiskMiB {
			return nil, api.Invalid("sizeMiB", "must be larger than the volume's %d MiB (volumes only grow) and at most %d MiB, not %d",
				v.Spec.SizeMiB, int64(maxDiskMiB), req.SizeMiB)
		}
		conds, err := s.ctl.Quota.AdmitVolume(r.Context(), v.Project, req.SizeMiB-v.Spec.SizeMiB)
		v.Spec.SizeMiB = req.SizeMiB
		return conds, err
	}, func(v *api.Volume, vm *api.VM) error {
		return setAttachment(vm, v)
	})
	s.answerVolume(w, r, v, err)
}

func (s *Server) setVolumeLimits(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeLimits
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.IOPS < 0 || req.BPS < 0 {
		s.writeError(w, r, api.Invalid("limits", "iops and bps must not be negative"))
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "volume", Name: r.PathValue("name"), Project: rq.project}
	v, err := s.updateVolume(r.Context(), s.volumeKey(r), func(v *api.Volume) ([]store.Op, error) {
		v.Spec.Limits = req
		return nil, nil
	}, func(v *api.Volume, vm *api.VM) error {
		return setAttachment(vm, v)
	})
	s.answerVolume(w, r, v, err)
}

// attachmentOf is what a VM's spec holds of a volume attached to it.
func attachmentOf(v *api.Volume) api.VolumeAttachment {
	return api.VolumeAttachment{Volume: v.Name, Path: v.Spec.Path, SizeMiB: v.Spec.SizeMiB, Limits: v.Spec.Limits, Export: v.Spec.Export}
}

// placeVolume sets a new volume's file in its pool and, in an nbd pool,
// the export VMs open it by.
func placeVolume(pool *api.Pool, v *api.Volume) {
	v.Spec.Path = filepath.Join(pool.Spec.Path, v.Project, v.UID+".qcow2")
	if pool.Spec.Kind == api.PoolNBD {
		v.Spec.Export = "nbd://" + pool.Spec.Address + "/" + v.UID
	}
}

// setAttachment writes the volume's size and limits into its VM's spec.
func setAttachment(vm *api.VM, v *api.Volume) error {
	i := slices.IndexFunc(vm.Spec.Volumes, func(a api.VolumeAttachment) bool { return a.Volume == v.Name })
	if i < 0 {
		return api.Conflict("vm %q does not list volume %q it is attached to", vm.Name, v.Name)
	}
	vm.Spec.Volumes[i] = attachmentOf(v)
	return nil
}

func (s *Server) snapshotVolume(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeSnapshot
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateName("name", req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "volume", Name: r.PathValue("name"), Project: rq.project}
	v, err := s.updateVolume(r.Context(), s.volumeKey(r), func(v *api.Volume) ([]store.Op, error) {
		switch {
		case v.Spec.Deletion != nil:
			return nil, api.Conflict("volume %q is being deleted", v.Name)
		case v.Spec.AttachedTo != "":
			return nil, api.Conflict("volume %q is attached to vm %q: detach it to snapshot it", v.Name, v.Spec.AttachedTo)
		case slices.Contains(v.Spec.Snapshots, req.Name):
			return nil, api.Conflict("volume %q already has a snapshot %q", v.Name, req.Name)
		case len(v.Spec.Snapshots) >= maxVolumeSnapshots:
			return nil, api.Unprocessable("volume %q has %d snapshots, the most it may have", v.Name, maxVolumeSnapshots)
		}
		v.Spec.Snapshots = append(v.Spec.Snapshots, req.Name)
		return nil, nil
	}, nil)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, volumeView(v))
}

// maxVolumeSnapshots bounds one volume's snapshots.
const maxVolumeSnapshots = 32

func (s *Server) deleteVolumeSnapshot(w http.ResponseWriter, r *http.Request) {
	snap := r.PathValue("snapshot")
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "volume", Name: r.PathValue("name"), Project: rq.project}
	v, err := s.updateVolume(r.Context(), s.volumeKey(r), func(v *api.Volume) ([]store.Op, error) {
		i := slices.Index(v.Spec.Snapshots, snap)
		if i < 0 {
			return nil, api.NotFound("snapshot", snap)
		}
		if users := s.volumes.Select(func(o *api.Volume) bool {
			return o.Project == v.Project && o.Spec.Source != nil && o.Spec.Source.Volume == v.Name && o.Spec.Source.Snapshot == snap && !ready(o) && o.Spec.Deletion == nil
		}); len(users) > 0 {
			return nil, api.Conflict("snapshot %q is being copied into volume %q: delete it once that is ready", snap, users[0].Name)
		}
		v.Spec.Snapshots = slices.Delete(v.Spec.Snapshots, i, i+1)
		return nil, nil
	}, nil)
	s.answerVolume(w, r, v, err)
}

// attachVolume attaches a ready volume to a VM of its project whose host
// sees the volume's pool. The volume and the VM's spec change in one
// transaction; the VM's host plugs it in (at once if the VM runs, at its
// next start otherwise).
func (s *Server) attachVolume(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeAttach
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateName("vm", req.VM); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "volume", Name: r.PathValue("name"), Project: rq.project}
	vmKey := api.Key(rq.project, req.VM)
	unlock := s.ctl.Ops.LockVM(vmKey)
	defer unlock()
	v, err := s.changeAttachment(r.Context(), s.volumeKey(r), vmKey, func(v *api.Volume, vm *api.VM) error {
		switch {
		case v.Spec.AttachedTo == vm.Name:
			return api.Conflict("volume %q is already attached to vm %q", v.Name, vm.Name)
		case v.Spec.AttachedTo != "":
			return api.Conflict("volume %q is attached to vm %q: detach it first", v.Name, v.Spec.AttachedTo)
		case !ready(v):
			return api.Conflict("volume %q is %s: attach it once its host has made it", v.Name, volumeView(v).Status.State)
		case vm.Spec.Provider != nil:
			return api.Unprocessable("vm %q runs in a connected estate: volumes attach to Polyvisor's own vms", vm.Name)
		case len(vm.Spec.Volumes) >= hypervisor.MaxVolumes:
			return api.Unprocessable("vm %q has %d volumes attached, the most a vm may have", vm.Name, hypervisor.MaxVolumes)
		}
		pool, ok := s.pools.Get(v.Spec.Pool)
		if !ok || !slices.Contains(pool.Spec.Hosts, vm.Spec.Host) || (pool.Spec.Kind == api.PoolDir && vm.Spec.Host != v.Spec.Host) {
			return api.Unprocessable("vm %q is on host %q, which does not see volume %q's pool %q", vm.Name, vm.Spec.Host, v.Name, v.Spec.Pool)
		}
		if vm.Spec.HA == api.HARestart && pool.Spec.Kind != api.PoolShared {
			return haRefused("vm %q is restarted on another host when its host is lost (ha: restart), and volume %q's pool %q is not shared: set its ha to none first", vm.Name, v.Name, v.Spec.Pool)
		}
		if slices.ContainsFunc(vm.Spec.Disks, func(d api.Disk) bool { return hypervisor.DiskSerial(d.Name) == hypervisor.DiskSerial(v.Name) }) {
			return api.Unprocessable("vm %q has a disk the guest would see under volume %q's name", vm.Name, v.Name)
		}
		v.Spec.AttachedTo = vm.Name
		vm.Spec.Volumes = append(vm.Spec.Volumes, attachmentOf(v))
		return nil
	})
	s.answerVolume(w, r, v, err)
}

// detachVolume takes a volume out of its VM's spec; the VM's host unplugs
// it. Naming a VM's own disk is refused: only volumes detach.
func (s *Server) detachVolume(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeAttach
	if err := decodeJSON(w, r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	name := r.PathValue("name")
	rq.resource = api.Ref{Kind: "volume", Name: name, Project: rq.project}
	cur, ok := s.volumes.Get(s.volumeKey(r))
	if !ok {
		if vm, found := s.vms.Get(api.Key(rq.project, req.VM)); req.VM != "" && found && slices.Contains(diskNames(vm), name) {
			s.writeError(w, r, api.Unprocessable("%q is vm %q's own disk, not a volume: only volumes detach", name, req.VM))
			return
		}
		s.writeError(w, r, api.NotFound("volume", name))
		return
	}
	if cur.Spec.AttachedTo == "" {
		s.writeError(w, r, api.Conflict("volume %q is not attached", name))
		return
	}
	if req.VM != "" && req.VM != cur.Spec.AttachedTo {
		s.writeError(w, r, api.Conflict("volume %q is attached to vm %q, not %q", name, cur.Spec.AttachedTo, req.VM))
		return
	}
	if vm, ok := s.vms.Get(api.Key(rq.project, cur.Spec.AttachedTo)); ok {
		if boot, ok := bootAttachment(vm); ok && boot.Volume == name {
			s.writeError(w, r, rootDetachRefused(name, vm.Name))
			return
		}
	}
	vmKey := api.Key(rq.project, cur.Spec.AttachedTo)
	unlock := s.ctl.Ops.LockVM(vmKey)
	defer unlock()
	v, err := s.changeAttachment(r.Context(), s.volumeKey(r), vmKey, func(v *api.Volume, vm *api.VM) error {
		if v.Spec.AttachedTo != vm.Name {
			return api.Conflict("volume %q is no longer attached to vm %q", v.Name, vm.Name)
		}
		if boot, ok := bootAttachment(vm); ok && boot.Volume == v.Name {
			return rootDetachRefused(v.Name, vm.Name)
		}
		v.Spec.AttachedTo = ""
		vm.Spec.Volumes = slices.DeleteFunc(vm.Spec.Volumes, func(a api.VolumeAttachment) bool { return a.Volume == v.Name })
		return nil
	})
	s.answerVolume(w, r, v, err)
}

// changeAttachment changes a volume and a VM together, again on a
// conflict. The caller holds the VM's lock, so no operation of this
// server starts on it meanwhile; one already under way is waited for.
func (s *Server) changeAttachment(ctx context.Context, volKey, vmKey string, change func(*api.Volume, *api.VM) error) (*api.Volume, error) {
	for attempt := 1; ; attempt++ {
		v, ok := s.volumes.Get(volKey)
		if !ok {
			_, name := api.SplitKey(volKey)
			return nil, api.NotFound("volume", name)
		}
		vm, ok := s.vms.Get(vmKey)
		if !ok {
			_, name := api.SplitKey(vmKey)
			return nil, api.NotFound("vm", name)
		}
		if vm.Spec.Deletion != nil {
			return nil, api.Conflict("vm %q is being deleted", vm.Name)
		}
		if s.ctl.Ops.Busy(vmKey) {
			return nil, api.Conflict("vm %q has operations under way: try again once they end", vm.Name)
		}
		nv, nvm := store.Clone(v), store.Clone(vm)
		if err := change(nv, nvm); err != nil {
			return nil, err
		}
		now := time.Now().UTC()
		nv.Generation++
		nvm.Generation++
		nv.UpdatedAt, nvm.UpdatedAt = now, now
		_, err := s.st.Txn(ctx, s.volumes.OpUpdate(volKey, nv, v.Version), s.vms.OpUpdate(vmKey, nvm, vm.Version))
		if err == nil {
			out, _ := s.volumes.Get(volKey)
			return out, nil
		}
		if errors.Is(err, store.ErrConflict) && attempt < admission.MaxAttempts {
			if berr := admission.Backoff(ctx, attempt); berr == nil {
				continue
			}
		}
		return nil, fmt.Errorf("attaching volume %q: %w", volKey, err)
	}
}

// agentVolume is the volume an agent route names, if it is the host's.
func (s *Server) agentVolume(r *http.Request) (string, *api.Volume, error) {
	key := api.Key(r.PathValue("project"), r.PathValue("volume"))
	v, ok := s.volumes.Get(key)
	if !ok || v.Spec.Host != r.PathValue("name") {
		return key, nil, api.NotFound("volume", r.PathValue("volume"))
	}
	return key, v, nil
}

// putVolumeStatus records what the volume's host observed.
func (s *Server) putVolumeStatus(w http.ResponseWriter, r *http.Request) {
	var st api.VolumeStatus
	if err := decodeJSON(w, r, &st, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	st.UpdatedAt = time.Now().UTC()
	for range 20 {
		key, cur, err := s.agentVolume(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		next := store.Clone(cur)
		next.Status = st
		if _, err := s.volumes.Update(r.Context(), key, next, cur.Version); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			s.writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.writeError(w, r, api.Conflict("volume is being updated concurrently"))
}

// volumeRemoved deletes a volume its host has deleted the files of.
func (s *Server) volumeRemoved(w http.ResponseWriter, r *http.Request) {
	key, v, err := s.agentVolume(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if v.Spec.Deletion == nil {
		s.writeError(w, r, api.Conflict("volume %q is not being deleted", v.Name))
		return
	}
	if err := s.volumes.Delete(r.Context(), key, v.Version); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("volume removed", "volume", key, "host", v.Spec.Host)
	w.WriteHeader(http.StatusNoContent)
}

// releaseVolumeOps are the writes that release the volumes of a VM
// being removed, for the transaction that removes it: each volume
// attached to it is detached, and the root volume its create made is
// marked for deletion when it was asked to be (deleteWithVM), which the
// returned names list for the audit. One transaction, so that no crash
// leaves a volume attached to a VM that no longer exists (a new VM of the
// same name would find it attached) or a VM gone with its volume held.
func (s *Server) releaseVolumeOps(vm *api.VM) ([]store.Op, []string) {
	var txn []store.Op
	var deleted []string
	now := time.Now().UTC()
	for _, a := range vm.Spec.Volumes {
		key := api.Key(vm.Project, a.Volume)
		cur, ok := s.volumes.Get(key)
		if !ok || cur.Spec.AttachedTo != vm.Name {
			continue
		}
		v := store.Clone(cur)
		v.Spec.AttachedTo = ""
		if a.DeleteWithVM && v.Spec.Deletion == nil {
			v.Spec.Deletion = &api.Deletion{RequestedAt: now}
			deleted = append(deleted, a.Volume)
		}
		v.Generation++
		v.UpdatedAt = now
		txn = append(txn, s.volumes.OpUpdate(key, v, cur.Version))
	}
	return txn, deleted
}

// auditReleasedRoots records the deletion of the root volumes a VM's
// removal marked for deletion with it.
func (s *Server) auditReleasedRoots(ctx context.Context, vm *api.VM, deleted []string) {
	for _, name := range deleted {
		s.auditSystemAs(ctx, "vm", "volume.delete", api.Ref{Kind: "volume", Name: name, Project: vm.Project},
			fmt.Sprintf("the root volume of vm %q, made with it and deleted with it", vm.Name))
	}
}

// diskNames are the names of a VM's own disks, unnamed ones as the host
// names them (disk0, disk1...).
func diskNames(vm *api.VM) []string {
	var out []string
	for i, d := range vm.Spec.Disks {
		if d.Name == "" {
			d.Name = fmt.Sprintf("disk%d", i)
		}
		out = append(out, d.Name)
	}
	return out
}

// rootDetachRefused answers a detach of a VM's root volume.
func rootDetachRefused(volume, vm string) error {
	return api.Unprocessable("volume %q is vm %q's root disk: it cannot be detached; it is released when the vm is deleted", volume, vm)
}
