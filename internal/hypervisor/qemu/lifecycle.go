package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/qmp"
)

// defaultStopTimeout bounds a graceful stop when StopOptions has none.
const defaultStopTimeout = 30 * time.Second

// Start spawns QEMU for a created, stopped VM and waits until QMP answers.
// QEMU runs in its own session with stdin on /dev/null and its output in
// qemu.log, so it outlives the agent; ctx bounds only the start. A start
// that fails kills the process and reports the tail of qemu.log.
func (d *Driver) Start(ctx context.Context, h *hypervisor.Handle, cfg hypervisor.VMConfig) error {
	return d.start(ctx, h, cfg, false)
}

// start is Start; incoming starts QEMU waiting for a migration stream.
func (d *Driver) start(ctx context.Context, h *hypervisor.Handle, cfg hypervisor.VMConfig, incoming bool) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	if processAlive(h.PID, h.PIDStart) {
		return fmt.Errorf("starting vm %s: already running as pid %d", h.UID, h.PID)
	}
	if d.adopt(h) {
		// A QEMU for this VM already runs (its start outlived the agent
		// that made it): never start a second one.
		return nil
	}
	cfg.UID = h.UID
	if err := validate(cfg); err != nil {
		return err
	}
	if err := checkEFI(h, cfg); err != nil {
		return err
	}
	for _, f := range []string{cfg.Kernel, cfg.Initrd} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("starting vm %s: %w", h.UID, err)
		}
	}
	if _, ok := h.Extra[extraQMP]; !ok {
		if err := d.sockets(h); err != nil {
			return err
		}
	}
	if err := ensureSockLink(h); err != nil {
		return err
	}
	p := pathsOf(h)
	for _, s := range []string{p.QMP, p.Serial, p.VNC, p.PIDFile} {
		os.Remove(s) // stale from a QEMU that was killed
	}
	conf := d.confinement()

	logPath := filepath.Join(h.Dir, qemuLog)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening qemu log: %w", err)
	}
	defer logf.Close()
	// The VM's processes go into its cgroup, QEMU's NICs to their passt.
	cg := conf.cgroups.forVM(h.UID)
	if cg != nil {
		if h.Extra == nil {
			h.Extra = map[string]string{}
		}
		h.Extra[extraCgroup] = cg.paths()
		if err := cg.create(limitsFor(cfg, d.accel.Accel)); err != nil {
			d.dropCgroup(h)
			return fmt.Errorf("starting vm %s: %w", h.UID, err)
		}
	}
	nics, err := d.openNICs(h.Dir, cfg.NICs, logf, cg)
	if err != nil {
		d.dropCgroup(h)
		return fmt.Errorf("starting vm %s: %w\nqemu.log:\n%s", h.UID, err, tailFile(logPath, 2048))
	}
	net := nics.user
	p.NetFDs, p.Jail, p.Incoming = nics.fds(), conf.jail, incoming
	extra := nics.files
	bootFile, err := openBootVolume(ctx, cfg.BootVolume)
	if err != nil {
		nics.close()
		net.kill()
		d.dropCgroup(h)
		return fmt.Errorf("starting vm %s: %w", h.UID, err)
	}
	if bootFile != nil {
		defer bootFile.Close()
		extra = append(slices.Clip(extra), bootFile)
		p.BootVolume = &BootVolume{Config: *cfg.BootVolume, FD: 2 + len(extra), Set: bootVolumeSet}
	}
	args := BuildArgs(cfg, p, d.accel.Accel)

	fmt.Fprintf(logf, "--- polyvisor: starting %s at %s\n", d.cfg.QEMUBinary, time.Now().Format(time.RFC3339))
	// Never exec.CommandContext: the VM must not die with a request.
	cmd := exec.Command(d.cfg.QEMUBinary, args...)
	cmd.Dir = h.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = extra // descriptors 3, 4, ...: p.NetFDs, then the root volume
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	nics.close()
	logf.Close()
	if err != nil {
		net.kill()
		d.dropCgroup(h)
		return fmt.Errorf("spawning qemu for vm %s: %w", h.UID, err)
	}
	exited := make(chan struct{})
	var waitErr error // set before exited is closed
	go func() {
		waitErr = cmd.Wait()
		d.log.Debug("reaped qemu", "vm", h.UID, "pid", cmd.Process.Pid, "status", waitErr)
		close(exited)
	}()
	pid := cmd.Process.Pid
	log := d.log.With("vm", h.UID, "pid", pid)

	fail := func(err error) error {
		cmd.Process.Kill()
		<-exited
		net.kill()
		d.dropCgroup(h)
		return fmt.Errorf("starting qemu for vm %s: %w\nqemu.log:\n%s", h.UID, err, tailFile(logPath, 2048))
	}
	if cg != nil {
		// QEMU is moved at once: it has not yet run the guest.
		if err := cg.add(pid); err != nil {
			return fail(err)
		}
	}
	sctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, d.cfg.StartTimeout)
		defer cancel()
	}
	c, err := waitQMP(sctx, p.QMP, exited)
	if err != nil {
		return fail(err)
	}
	if err := net.alive(); err != nil {
		c.Close()
		return fail(err)
	}
	st, err := readProcStat(pid)
	if err != nil {
		c.Close()
		return fail(err)
	}
	h.PID, h.PIDStart = pid, st.Start
	if err := saveHandle(h); err != nil {
		c.Close()
		h.PID, h.PIDStart = 0, 0
		return fail(err)
	}
	d.register(&vm{uid: h.UID, dir: h.Dir, pid: pid, start: st.Start, qmp: c, exited: exited, child: true,
		exitStatus: func() string { return exitText(waitErr) }})
	log.Info("started vm", "accel", d.accel.Accel, "paused", cfg.StartPaused)
	return nil
}

// waitQMP dials the QMP socket until QEMU answers, QEMU exits or ctx ends.
func waitQMP(ctx context.Context, path string, exited <-chan struct{}) (*qmp.Client, error) {
	for {
		c, err := qmp.Dial(ctx, path)
		if err == nil {
			return c, nil
		}
		select {
		case <-exited:
			return nil, errors.New("qemu exited during startup")
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for qmp: %w", errors.Join(ctx.Err(), err))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop shuts the VM down. Unless opts.Force, it presses the ACPI power
// button (system_powerdown) and waits up to opts.Timeout (default 30s) for
// QEMU to exit; then, or at once when forced, it asks QEMU to quit and
// finally kills it. A paused VM is stopped forcibly: its guest cannot act
// on the button. ctx ending during the graceful wait returns ctx's error
// and leaves the VM running.
func (d *Driver) Stop(ctx context.Context, h *hypervisor.Handle, opts hypervisor.StopOptions) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	v, err := d.attached(ctx, h)
	if err != nil && !opts.Force {
		return err
	}
	if v == nil && !processAlive(h.PID, h.PIDStart) {
		return d.markStopped(h)
	}
	d.expectStop(h)
	log := d.log.With("vm", h.UID, "pid", h.PID)
	if v != nil && !opts.Force {
		var st struct {
			Status string `json:"status"`
		}
		if err := v.qmp.Execute(ctx, "query-status", nil, &st); err == nil && st.Status == "running" {
			timeout := opts.Timeout
			if timeout <= 0 {
				timeout = defaultStopTimeout
			}
			log.Info("stopping vm through acpi", "timeout", timeout)
			if err := v.qmp.Execute(ctx, "system_powerdown", nil, nil); err != nil {
				log.Warn("system_powerdown failed", "err", err)
			}
			t := time.NewTimer(timeout)
			select {
			case <-v.exited:
				t.Stop()
				log.Info("vm stopped gracefully")
				return d.markStopped(h)
			case <-ctx.Done():
				t.Stop()
				d.unexpectStop(h)
				return fmt.Errorf("stopping vm %s: %w", h.UID, ctx.Err())
			case <-t.C:
				log.Warn("vm did not stop in time, forcing", "timeout", timeout)
			}
		} else {
			log.Info("vm is not running guest code, forcing stop", "status", st.Status, "err", err)
		}
	}
	if err := d.forceStop(h, v); err != nil {
		return err
	}
	return d.markStopped(h)
}

// forceStop asks QEMU to quit, then kills it. It does not depend on the
// caller's ctx: a forced stop always finishes.
func (d *Driver) forceStop(h *hypervisor.Handle, v *vm) error {
	exited := func(wait time.Duration) bool {
		deadline := time.Now().Add(wait)
		for {
			if v != nil {
				select {
				case <-v.exited:
					return true
				default:
				}
			} else if !processAlive(h.PID, h.PIDStart) {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if v != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := v.qmp.Execute(ctx, "quit", nil, nil)
		cancel()
		if err != nil && !errors.Is(err, qmp.ErrClosed) {
			d.log.Warn("qmp quit failed", "vm", h.UID, "err", err)
		}
		if exited(5 * time.Second) {
			return nil
		}
	}
	d.log.Warn("killing qemu", "vm", h.UID, "pid", h.PID)
	if err := killProcess(h.PID, h.PIDStart, syscall.SIGKILL); err != nil {
		return fmt.Errorf("stopping vm %s: %w", h.UID, err)
	}
	if !exited(10 * time.Second) {
		return fmt.Errorf("stopping vm %s: pid %d survived SIGKILL", h.UID, h.PID)
	}
	return nil
}

// markStopped forgets the process in the handle, removes the VM's cgroup,
// and persists the handle.
func (d *Driver) markStopped(h *hypervisor.Handle) error {
	cg := h.Extra[extraCgroup] != ""
	if h.PID == 0 && h.PIDStart == 0 && !cg {
		return nil
	}
	h.PID, h.PIDStart = 0, 0
	d.dropCgroup(h)
	return saveHandle(h)
}

// dropCgroup removes the VM's cgroup once its processes are gone, and
// forgets it in the handle (not persisted here).
func (d *Driver) dropCgroup(h *hypervisor.Handle) {
	if err := removeCgroups(h.Extra[extraCgroup]); err != nil {
		d.log.Warn("removing vm cgroup", "vm", h.UID, "err", err)
	}
	delete(h.Extra, extraCgroup)
}

// Pause stops the VM's CPUs (QMP stop).
func (d *Driver) Pause(ctx context.Context, h *hypervisor.Handle) error {
	return d.execute(ctx, h, "stop")
}

// Resume restarts the VM's CPUs (QMP cont), also after a paused start.
func (d *Driver) Resume(ctx context.Context, h *hypervisor.Handle) error {
	return d.execute(ctx, h, "cont")
}

func (d *Driver) execute(ctx context.Context, h *hypervisor.Handle, cmd string) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	v, err := d.attached(ctx, h)
	if err != nil {
		return err
	}
	if v == nil {
		return fmt.Errorf("running %s on vm %s: %w", cmd, h.UID, errNotRunning)
	}
	if err := v.qmp.Execute(ctx, cmd, nil, nil); err != nil {
		return fmt.Errorf("running %s on vm %s: %w", cmd, h.UID, err)
	}
	return nil
}

// State reports the VM's power state. A process that is gone, a zombie,
// or whose start time differs from the handle's is stopped; otherwise QMP
// query-status decides (prelaunch and other non-running states are paused).
func (d *Driver) State(ctx context.Context, h *hypervisor.Handle) (hypervisor.Status, error) {
	if err := checkHandle(h); err != nil {
		return hypervisor.Status{}, err
	}
	stopped := hypervisor.Status{State: hypervisor.StateStopped}
	v, err := d.attached(ctx, h)
	if err != nil {
		return hypervisor.Status{}, err
	}
	if v == nil {
		return stopped, nil
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := v.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
		if !processAlive(h.PID, h.PIDStart) {
			return stopped, nil
		}
		return hypervisor.Status{}, fmt.Errorf("querying state of vm %s: %w", h.UID, err)
	}
	// internal-error and guest-panicked are crashed; paused, prelaunch,
	// inmigrate, io-error and the like are paused.
	return statusWithPID(statusOf(st.Status, h.Dir), h), nil
}

// Recover re-attaches to a VM after an agent restart: if the process the
// handle names (PID and start time) still runs, it reconnects QMP and
// reports its state; otherwise the VM is stopped. It never starts QEMU.
func (d *Driver) Recover(ctx context.Context, h *hypervisor.Handle) (hypervisor.Status, error) {
	if err := checkHandle(h); err != nil {
		return hypervisor.Status{}, err
	}
	if !processAlive(h.PID, h.PIDStart) && !d.adopt(h) {
		d.noteGone(h)
		if err := d.markStopped(h); err != nil {
			return hypervisor.Status{}, err
		}
		return hypervisor.Status{State: hypervisor.StateStopped}, nil
	}
	d.log.Info("recovering running vm", "vm", h.UID, "pid", h.PID)
	return d.State(ctx, h)
}

// Destroy stops the VM (forced) if it runs and removes its directory. With
// keepDisks, the disk files are first moved to StateDir/kept/<name>-<uid>/
// (their paths in h.Disks are updated) and survive.
func (d *Driver) Destroy(ctx context.Context, h *hypervisor.Handle, keepDisks bool) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	if processAlive(h.PID, h.PIDStart) {
		if err := d.Stop(ctx, h, hypervisor.StopOptions{Force: true}); err != nil {
			return fmt.Errorf("destroying vm %s: %w", h.UID, err)
		}
	}
	if keepDisks && len(h.Disks) > 0 {
		kept := filepath.Join(filepath.Dir(h.Dir), keptDirName, h.Name+"-"+h.UID)
		if h.Name == "" || !safeName.MatchString(h.Name) {
			kept = filepath.Join(filepath.Dir(h.Dir), keptDirName, h.UID)
		}
		if err := os.MkdirAll(kept, 0o700); err != nil {
			return fmt.Errorf("keeping disks of vm %s: %w", h.UID, err)
		}
		for i, df := range h.Disks {
			if df.Shared {
				continue // its pool's, not the VM's
			}
			dst := filepath.Join(kept, filepath.Base(df.Path))
			if err := os.Rename(df.Path, dst); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("keeping disk %s of vm %s: %w", df.Name, h.UID, err)
			}
			h.Disks[i].Path = dst
		}
	}
	if link := h.Extra[extraSockLink]; link != "" {
		os.Remove(link)
	}
	d.dropCgroup(h)
	if cg := d.confinement().cgroups.forVM(h.UID); cg != nil {
		// A start the agent did not see finish may have made it.
		removeCgroups(cg.paths())
	}
	if err := os.RemoveAll(h.Dir); err != nil {
		return fmt.Errorf("removing dir of vm %s: %w", h.UID, err)
	}
	d.forget(h.UID)
	d.log.Info("destroyed vm", "vm", h.UID, "keptDisks", keepDisks)
	return nil
}
