package libvirt

import (
	"context"
	"errors"
	"fmt"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// How often Shutdown looks at a domain's state, and asks the guest again.
const (
	pollInterval    = 100 * time.Millisecond
	repressInterval = 5 * time.Second
)

// state reads a domain's libvirt state.
func state(l *golibvirt.Libvirt, dom golibvirt.Domain) (golibvirt.DomainState, error) {
	st, _, err := l.DomainGetState(dom, 0)
	if err != nil {
		return 0, fmt.Errorf("read state of vm %s: %w", dom.Name, classify(err))
	}
	return golibvirt.DomainState(st), nil
}

// PowerOn starts a stopped domain, resumes a paused one and wakes a
// PM-suspended one; a running domain is left as it is.
func (p *Provider) PowerOn(ctx context.Context, id string) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	st, err := state(l, dom)
	if err != nil {
		return err
	}
	switch powerState(st) {
	case provider.PowerRunning:
		return nil
	case provider.PowerPaused:
		if st == golibvirt.DomainPmsuspended {
			err = l.DomainPmWakeup(dom, 0)
		} else {
			err = l.DomainResume(dom)
		}
	default:
		err = l.DomainCreate(dom)
	}
	if err != nil {
		return fmt.Errorf("power on vm %s: %w", dom.Name, classify(err))
	}
	p.log.Info("powered on vm", "vm", dom.Name)
	return nil
}

// Shutdown asks the guest to shut down (the hypervisor's choice: the guest
// agent when configured, else the ACPI power button), asks again every 5 s
// (a guest still booting may miss the first request), and destroys the
// domain when it has not stopped within timeout. A paused domain is
// resumed first so that its guest can react; a stopped one is left alone.
func (p *Provider) Shutdown(ctx context.Context, id string, timeout time.Duration) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	st, err := state(l, dom)
	if err != nil {
		return err
	}
	switch powerState(st) {
	case provider.PowerStopped:
		return nil
	case provider.PowerPaused:
		if err := l.DomainResume(dom); err != nil {
			return fmt.Errorf("resume vm %s to shut it down: %w", dom.Name, classify(err))
		}
	}
	if err := l.DomainShutdown(dom); err != nil {
		if stopped(l, dom) {
			return nil
		}
		return fmt.Errorf("shut down vm %s: %w", dom.Name, classify(err))
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	repress := time.NewTicker(repressInterval)
	defer repress.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("shut down vm %s: %w", dom.Name, ctx.Err())
		case <-repress.C:
			p.log.Debug("asking the guest again to shut down", "vm", dom.Name)
			l.DomainShutdown(dom) // fails once the domain has stopped
		case <-deadline.C:
			p.log.Warn("guest did not shut down in time: powering off", "vm", dom.Name, "timeout", timeout)
			if err := l.DomainDestroy(dom); err != nil && !stopped(l, dom) {
				return fmt.Errorf("power off vm %s after shutdown timeout: %w", dom.Name, classify(err))
			}
			return nil
		case <-tick.C:
			st, err := state(l, dom)
			if err != nil {
				return err
			}
			if powerState(st) == provider.PowerStopped {
				p.log.Info("vm shut down", "vm", dom.Name)
				return nil
			}
		}
	}
}

// stopped says whether the domain is stopped now (false when unknown).
func stopped(l *golibvirt.Libvirt, dom golibvirt.Domain) bool {
	st, err := state(l, dom)
	return err == nil && powerState(st) == provider.PowerStopped
}

// PowerOff destroys (hard stops) the domain; a stopped one is left alone.
func (p *Provider) PowerOff(ctx context.Context, id string) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	if err := l.DomainDestroy(dom); err != nil {
		if stopped(l, dom) {
			return nil
		}
		return fmt.Errorf("power off vm %s: %w", dom.Name, classify(err))
	}
	p.log.Info("powered off vm", "vm", dom.Name)
	return nil
}

// Reboot asks the guest to reboot (ACPI or agent, the hypervisor's
// choice), and resets the domain when the hypervisor cannot. The domain
// must be running.
func (p *Provider) Reboot(ctx context.Context, id string) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	if err := requireState(l, dom, provider.PowerRunning, "reboot"); err != nil {
		return err
	}
	if err := l.DomainReboot(dom, 0); err != nil {
		p.log.Info("guest reboot refused: resetting", "vm", dom.Name, "err", err)
		if err := l.DomainReset(dom, 0); err != nil {
			return fmt.Errorf("reboot vm %s: %w", dom.Name, classify(err))
		}
	}
	return nil
}

// Suspend pauses a running domain (its QEMU stops running vCPUs); a paused
// one is left alone.
func (p *Provider) Suspend(ctx context.Context, id string) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	st, err := state(l, dom)
	if err != nil {
		return err
	}
	switch powerState(st) {
	case provider.PowerPaused:
		return nil
	case provider.PowerStopped:
		return fmt.Errorf("suspend vm %s: it is stopped: %w", dom.Name, provider.ErrBadState)
	}
	if err := l.DomainSuspend(dom); err != nil {
		return fmt.Errorf("suspend vm %s: %w", dom.Name, classify(err))
	}
	return nil
}

// Resume continues a paused domain; a running one is left alone.
func (p *Provider) Resume(ctx context.Context, id string) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	st, err := state(l, dom)
	if err != nil {
		return err
	}
	switch {
	case powerState(st) == provider.PowerRunning:
		return nil
	case powerState(st) == provider.PowerStopped:
		return fmt.Errorf("resume vm %s: it is stopped: %w", dom.Name, provider.ErrBadState)
	case st == golibvirt.DomainPmsuspended:
		err = l.DomainPmWakeup(dom, 0)
	default:
		err = l.DomainResume(dom)
	}
	if err != nil {
		return fmt.Errorf("resume vm %s: %w", dom.Name, classify(err))
	}
	return nil
}

// requireState fails with provider.ErrBadState unless the domain is in
// the power state want.
func requireState(l *golibvirt.Libvirt, dom golibvirt.Domain, want, action string) error {
	st, err := state(l, dom)
	if err != nil {
		return err
	}
	if got := powerState(st); got != want {
		return fmt.Errorf("%s vm %s: it is %s, not %s: %w", action, dom.Name, got, want, provider.ErrBadState)
	}
	return nil
}

// Delete undefines a stopped domain with its snapshot, checkpoint, managed
// save and NVRAM metadata, then deletes the volumes CreateVM made for it
// (recorded in its metadata). Disks of domains made elsewhere are left:
// they may be shared, and nothing says they belong to the domain alone.
func (p *Provider) Delete(ctx context.Context, id string) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	if err := requireState(l, dom, provider.PowerStopped, "delete"); err != nil {
		return err
	}
	raw, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive)
	if err != nil {
		return fmt.Errorf("describe vm %s: %w", dom.Name, classify(err))
	}
	d, err := parseDomain(raw)
	if err != nil {
		return fmt.Errorf("parse xml of vm %s: %w", dom.Name, err)
	}
	if err := undefine(l, dom); err != nil {
		return fmt.Errorf("delete vm %s: %w", dom.Name, classify(err))
	}
	var errs []error
	if m := d.Metadata.Polyvisor; m != nil {
		for _, v := range m.Volumes {
			if err := deleteVolume(l, v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete vm %s: it is undefined but: %w", dom.Name, err)
	}
	p.log.Info("deleted vm", "vm", dom.Name)
	return nil
}

// undefine removes a domain's definition with all its metadata; drivers
// that refuse some of the flags (the test driver) get fewer.
func undefine(l *golibvirt.Libvirt, dom golibvirt.Domain) error {
	all := golibvirt.DomainUndefineManagedSave | golibvirt.DomainUndefineSnapshotsMetadata |
		golibvirt.DomainUndefineNvram | golibvirt.DomainUndefineCheckpointsMetadata
	err := l.DomainUndefineFlags(dom, all)
	if isCode(err, golibvirt.ErrInvalidArg) || isCode(err, golibvirt.ErrNoSupport) {
		err = l.DomainUndefineFlags(dom, golibvirt.DomainUndefineManagedSave|golibvirt.DomainUndefineSnapshotsMetadata)
	}
	return err
}

// deleteVolume deletes a volume the provider made; one already gone is
// not an error.
func deleteVolume(l *golibvirt.Libvirt, v volMeta) error {
	var vol golibvirt.StorageVol
	pool, err := l.StoragePoolLookupByName(v.Pool)
	if err == nil {
		vol, err = l.StorageVolLookupByName(pool, v.Name)
	}
	if err != nil {
		if isCode(err, golibvirt.ErrNoStorageVol) || isCode(err, golibvirt.ErrNoStoragePool) {
			return nil
		}
		return fmt.Errorf("look up volume %s/%s: %w", v.Pool, v.Name, classify(err))
	}
	if err := l.StorageVolDelete(vol, 0); err != nil {
		return fmt.Errorf("delete volume %s/%s: %w", v.Pool, v.Name, classify(err))
	}
	return nil
}

// Reconfigure sets the vCPUs and memory of a stopped domain's persistent
// definition; a value of zero or less leaves that setting as it is. The
// maximum (vcpu count, memory) ends equal to the current value.
func (p *Provider) Reconfigure(ctx context.Context, id string, vcpus int, memoryMiB int64) error {
	l, dom, err := p.domain(ctx, id)
	if err != nil {
		return err
	}
	if err := requireState(l, dom, provider.PowerStopped, "reconfigure"); err != nil {
		return err
	}
	raw, err := l.DomainGetXMLDesc(dom, golibvirt.DomainXMLInactive)
	if err != nil {
		return fmt.Errorf("describe vm %s: %w", dom.Name, classify(err))
	}
	d, err := parseDomain(raw)
	if err != nil {
		return fmt.Errorf("parse xml of vm %s: %w", dom.Name, err)
	}
	cfg := uint32(golibvirt.DomainAffectConfig)
	if vcpus > 0 {
		n := uint32(vcpus)
		// The maximum must stay at or above the current count.
		steps := []uint32{cfg, cfg | uint32(golibvirt.DomainVCPUMaximum)}
		if vcpus > d.VCPU.Max {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, flags := range steps {
			if err := l.DomainSetVcpusFlags(dom, n, flags); err != nil {
				return fmt.Errorf("set vcpus of vm %s to %d: %w", dom.Name, vcpus, classify(err))
			}
		}
	}
	if memoryMiB > 0 {
		kib := uint64(memoryMiB) << 10
		steps := []uint32{cfg, cfg | uint32(golibvirt.DomainMemMaximum)}
		if kib > d.Memory.bytes("KiB")>>10 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, flags := range steps {
			if err := l.DomainSetMemoryFlags(dom, kib, flags); err != nil {
				return fmt.Errorf("set memory of vm %s to %d MiB: %w", dom.Name, memoryMiB, classify(err))
			}
		}
	}
	p.log.Info("reconfigured vm", "vm", dom.Name, "vcpus", vcpus, "memoryMiB", memoryMiB)
	return nil
}
