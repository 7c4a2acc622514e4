package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// syncVolumes makes the volumes plugged into the running (or paused) VM
// those of its spec: it unplugs the ones no longer there, plugs in the
// new ones, grows and limits them as the spec says. A stopped VM has
// nothing plugged in; its volumes go in after its next start.
func (w *worker) syncVolumes(ctx context.Context, h *hypervisor.Handle, vm *api.VM) error {
	va, ok := w.a.driver.(hypervisor.VolumeAttacher)
	if !ok {
		if len(vm.Spec.Volumes) > 0 {
			return fmt.Errorf("driver %s cannot attach volumes: %w", w.a.driver.Name(), hypervisor.ErrNotSupported)
		}
		return nil
	}
	st, err := w.a.driver.State(ctx, h)
	if err != nil || (st.State != hypervisor.StateRunning && st.State != hypervisor.StatePaused) {
		return nil
	}
	plugged, err := va.Volumes(ctx, h)
	if err != nil {
		return fmt.Errorf("listing the vm's volumes: %w", err)
	}
	want := map[string]api.VolumeAttachment{}
	for _, a := range vm.Spec.Volumes {
		want[hypervisor.VolumeID(a.Volume)] = a
	}
	have := map[string]hypervisor.VolumeState{}
	var errs []error
	for _, p := range plugged {
		if _, ok := want[p.ID]; !ok {
			if err := va.DetachVolume(ctx, h, p.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			w.log.Info("volume unplugged", "device", p.ID)
			continue
		}
		have[p.ID] = p
	}
	for _, a := range vm.Spec.Volumes {
		id := hypervisor.VolumeID(a.Volume)
		p, ok := have[id]
		if !ok {
			if err := va.AttachVolume(ctx, h, hypervisor.VolumeConfig{Name: a.Volume, Path: a.Path, IOPS: a.Limits.IOPS, BPS: a.Limits.BPS}); err != nil {
				errs = append(errs, err)
				continue
			}
			w.log.Info("volume plugged in", "volume", a.Volume, "device", id)
			vs, err := va.Volumes(ctx, h)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, s := range vs {
				if s.ID == id {
					p = s
				}
			}
		}
		if p.SizeMiB < a.SizeMiB {
			if err := va.ResizeVolume(ctx, h, id, a.SizeMiB); err != nil {
				errs = append(errs, err)
			}
		}
		if p.IOPS != a.Limits.IOPS || p.BPS != a.Limits.BPS {
			if err := va.SetVolumeLimits(ctx, h, id, a.Limits.IOPS, a.Limits.BPS); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// pluggedVolumes is what the report says of the VM's plugged volumes.
func (w *worker) pluggedVolumes(ctx context.Context, h *hypervisor.Handle, vm *api.VM) []api.VolumeAttachmentStatus {
	va, ok := w.a.driver.(hypervisor.VolumeAttacher)
	if !ok || len(vm.Spec.Volumes) == 0 {
		return nil
	}
	vs, err := va.Volumes(ctx, h)
	if err != nil {
		return nil
	}
	names := map[string]string{}
	for _, a := range vm.Spec.Volumes {
		names[hypervisor.VolumeID(a.Volume)] = a.Volume
	}
	var out []api.VolumeAttachmentStatus
	for _, s := range vs {
		out = append(out, api.VolumeAttachmentStatus{Volume: names[s.ID], Device: s.ID, SizeMiB: s.SizeMiB, Port: s.Port})
	}
	return out
}
