package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

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
			if err := va.AttachVolume(ctx, h, hypervisor.VolumeConfig{Name: a.Volume, Path: a.Path, IOPS: a.Limits.IOPS, BPS: a.Limits.BPS, Export: a.Export}); err != nil {
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

// volumePendingError: the VM's root volume is not made yet (its host is
// still copying its image), so the VM cannot start; its convergence
// waits for it rather than fail.
type volumePendingError struct{ volume string }

func (e *volumePendingError) Error() string {
	return fmt.Sprintf("root volume %s is not made yet", e.volume)
}

// volumeWait bounds how long a VM waits for its root volume to be made.
var volumeWait = 10 * time.Minute

// bootVolume is the VM's root volume as the driver opens it at start, nil
// when it has none. A volume's file appears whole (it is made under a
// temporary name and renamed), so its presence means it is made; an nbd
// pool's volume is made once its serving host exports it.
func bootVolume(ctx context.Context, vm *api.VM) (*hypervisor.VolumeConfig, error) {
	for _, a := range vm.Spec.Volumes {
		if !a.Boot {
			continue
		}
		vc := &hypervisor.VolumeConfig{Name: a.Volume, Path: a.Path, IOPS: a.Limits.IOPS, BPS: a.Limits.BPS, Export: a.Export}
		if a.Export != "" {
			ok, err := nbdExported(ctx, a.Export)
			if err != nil {
				return nil, fmt.Errorf("reaching root volume %s: %w", a.Volume, err)
			}
			if !ok {
				return nil, &volumePendingError{volume: a.Volume}
			}
			return vc, nil
		}
		if _, err := os.Stat(a.Path); errors.Is(err, fs.ErrNotExist) {
			return nil, &volumePendingError{volume: a.Volume}
		} else if err != nil {
			return nil, fmt.Errorf("reading root volume %s: %w", a.Volume, err)
		}
		return vc, nil
	}
	return nil, nil
}
