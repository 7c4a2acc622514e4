package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// migrateToProjects moves what a store written before projects holds into
// the default project: images and VMs get the project and their key
// "<project>/<name>", VM specs name images by key, operations name their
// target's project. It runs at start, before agents are served; a store
// already migrated is left as it is.
func (s *Server) migrateToProjects(ctx context.Context) error {
	moved := 0
	for _, img := range listAll(s.images, func(i *api.Image) bool { return i.Project == "" }) {
		next := store.Clone(img)
		next.Project = api.DefaultProject
		if _, err := s.st.Txn(ctx, s.images.OpDelete(img.Name, img.Version), s.images.OpCreate(next.Key(), next)); err != nil {
			return fmt.Errorf("moving image %q into the default project: %w", img.Name, err)
		}
		moved++
	}
	canon := func(ref string) string {
		if ref == "" || strings.Contains(ref, "/") {
			return ref
		}
		return api.Key(api.DefaultProject, ref)
	}
	for _, vm := range listAll(s.vms, func(v *api.VM) bool { return v.Project == "" }) {
		next := store.Clone(vm)
		next.Project = api.DefaultProject
		for i := range next.Spec.Disks {
			next.Spec.Disks[i].Image = canon(next.Spec.Disks[i].Image)
		}
		next.Spec.Boot.Kernel, next.Spec.Boot.Initrd = canon(next.Spec.Boot.Kernel), canon(next.Spec.Boot.Initrd)
		if _, err := s.st.Txn(ctx, s.vms.OpDelete(vm.Name, vm.Version), s.vms.OpCreate(next.Key(), next)); err != nil {
			return fmt.Errorf("moving vm %q into the default project: %w", vm.Name, err)
		}
		moved++
	}
	for _, op := range listAll(s.ops, func(o *api.Operation) bool {
		return o.Target.Project == "" && (o.Target.Kind == "vm" || o.Target.Kind == "image")
	}) {
		next := store.Clone(op)
		next.Target.Project = api.DefaultProject
		if _, err := s.ops.Update(ctx, op.ID, next, op.Version); err != nil {
			return fmt.Errorf("moving operation %s into the default project: %w", op.ID, err)
		}
		moved++
	}
	if moved > 0 {
		s.log.Info("moved objects written before projects into the default project", "objects", moved)
	}
	return nil
}
