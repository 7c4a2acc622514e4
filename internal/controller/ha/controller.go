package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/controller/placement"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Placer places a restarted VM (placement.Placer).
type Placer interface {
	// Place picks a host; release is called once the write it admits
	// returned.
	Place(ctx context.Context, req scheduler.Request, filter placement.Filter) (host string, conds []store.Op, release func(), err error)
}

// Audit records what the controller did, as the system.
type Audit func(ctx context.Context, action string, target api.Ref, opID, outcome, msg string)

// Config is what the controller works on.
type Config struct {
	Hosts   *store.Collection[api.Host]
	VMs     *store.Collection[api.VM]
	Ops     *store.Collection[api.Operation]
	Pools   *store.Collection[api.Pool]
	Volumes *store.Collection[api.Volume]
	// VMsOn, when set, returns the VMs a host is or will be running (an
	// index by host); otherwise the VMs are scanned.
	VMsOn  func(host string) []*api.VM
	Placer Placer
	// LockVM serializes with the operation controller on one VM.
	LockVM func(key string) func()
	// LastHeard is the newest heartbeat of a host the leader knows of.
	LastHeard func(h *api.Host) time.Time
	Timings
	// Hook, when set, is a command run with the lost host's name as its
	// last argument (and POLYVISOR_HOST, POLYVISOR_HOST_ADDRESS, the
	// address the host reported when it is an IP address, in its
	// environment) once the host is silent for T_fence; exiting 0 says
	// the host is powered off, which fences it at once.
	Hook        []string
	HookTimeout time.Duration
	Audit       Audit
	// Now is the clock (time.Now when nil).
	Now    func() time.Time
	Logger *slog.Logger
}

// Controller fences lost hosts and restarts their HA VMs elsewhere.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	hooks map[string]*hookRun // by host, for the current episode
}

// hookRun is one run of the fence hook for a host's episode (its pending
// record's deadline names the episode).
type hookRun struct {
	episode time.Time
	done    bool
	ok      bool
	out     string
}

// New makes a controller; Lead runs it.
func New(cfg Config) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Audit == nil {
		cfg.Audit = func(context.Context, string, api.Ref, string, string, string) {}
	}
	if cfg.HookTimeout <= 0 {
		cfg.HookTimeout = 30 * time.Second
	}
	return &Controller{cfg: cfg, log: cfg.Logger, hooks: map[string]*hookRun{}}
}

// Lead checks the hosts until ctx ends (the term does), writing through
// w, the term's fenced writer. Nothing is judged from before the term
// began: every host gets a full T_fence from it.
func (c *Controller) Lead(ctx context.Context, w store.Writer) {
	if c.cfg.FenceTimeout <= 0 {
		return
	}
	began := c.cfg.Now()
	tick := time.NewTicker(min(max(c.cfg.FenceTimeout/10, 100*time.Millisecond), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			c.Check(ctx, w, began)
		}
	}
}

// Check judges every host of Polyvisor's once. Only a host being fenced
// or silent for T_fence can need its HA VMs, so the VMs are read once per
// check, for those hosts alone: a check costs the hosts, not hosts × VMs.
func (c *Controller) Check(ctx context.Context, w store.Writer, began time.Time) {
	now := c.cfg.Now()
	hosts := c.cfg.Hosts.Select(func(h *api.Host) bool { return h.Provider == nil })
	lasts := make([]time.Time, len(hosts))
	var judged map[string][]*api.VM
	for i, h := range hosts {
		lasts[i] = c.cfg.LastHeard(h)
		if lasts[i].Before(began) {
			lasts[i] = began
		}
		if h.Fence != nil || now.Sub(lasts[i]) >= c.cfg.FenceTimeout {
			if judged == nil {
				judged = map[string][]*api.VM{}
			}
			judged[h.Name] = nil
		}
	}
	if judged != nil {
		c.haVMs(judged)
	}
	for i, h := range hosts {
		last := lasts[i]
		vms := judged[h.Name]
		if h.Fence != nil && h.Fence.State == api.FenceFenced && h.Fence.By != "hook" {
			vms = slices.DeleteFunc(vms, func(vm *api.VM) bool { return !confirmed(vm) })
		}
		hook := c.hookOutcome(h)
		step := c.cfg.Decide(now, last, h.Fence, len(vms) > 0, hook != nil && hook.ok, keeperArmed(h))
		var err error
		switch step {
		case Suspect:
			err = c.suspect(ctx, w, h, last, now)
		case Fence:
			err = c.fence(ctx, w, h, last, now, hook, vms)
		case Unknown:
			err = c.unknown(ctx, w, h, last, hook)
		case Restart:
			for _, vm := range vms {
				if rerr := c.restart(ctx, w, h.Name, vm.Key()); rerr != nil && ctx.Err() == nil {
					c.log.Warn("restarting an ha vm of a fenced host", "host", h.Name, "vm", vm.Key(), "err", rerr)
				}
			}
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrConflict) {
			c.log.Warn("fencing host", "host", h.Name, "step", step, "err", err)
		}
	}
}

// keeperArmed tells whether the host's last heartbeat said its keeper
// was armed: every change of the agent's report is written with the
// heartbeat that carries it, so the host's record holds what the last
// one said.
func keeperArmed(h *api.Host) bool { return h.Status.Keeper != nil && h.Status.Keeper.Armed }

// haVMs fills byHost, keyed by the hosts to judge, with the VMs placed on
// each that are restarted elsewhere when it is lost: HA restart, meant to
// run, not being deleted or migrated.
func (c *Controller) haVMs(byHost map[string][]*api.VM) {
	restartable := func(vm *api.VM) bool {
		s := vm.Spec
		return s.HA == api.HARestart && s.Provider == nil && s.Deletion == nil &&
			s.Migration == nil && s.PowerState != api.PowerStopped
	}
	if c.cfg.VMsOn != nil {
		for host := range byHost {
			for _, vm := range c.cfg.VMsOn(host) {
				if vm.Spec.Host == host && restartable(vm) {
					byHost[host] = append(byHost[host], vm)
				}
			}
		}
		return
	}
	for _, vm := range c.cfg.VMs.Select(func(vm *api.VM) bool {
		_, judged := byHost[vm.Spec.Host]
		return judged && restartable(vm)
	}) {
		byHost[vm.Spec.Host] = append(byHost[vm.Spec.Host], vm)
	}
}

// suspect records a host's fencing as pending, conditional on the host
// as read, and starts the fence hook.
func (c *Controller) suspect(ctx context.Context, w store.Writer, h *api.Host, last, now time.Time) error {
	next := store.Clone(h)
	next.Fence = &api.HostFence{State: api.FencePending, LastHeartbeat: last.UTC(), Deadline: c.cfg.Deadline(last).UTC()}
	if _, err := w.Txn(ctx, c.cfg.Hosts.OpUpdate(h.Name, next, h.Version)); err != nil {
		return fmt.Errorf("recording host %q as pending fencing: %w", h.Name, err)
	}
	c.log.Warn("host silent for T_fence: fencing it", "host", h.Name, "last", last, "restartAt", next.Fence.Deadline)
	c.cfg.Audit(ctx, "host.fence.pending", api.Ref{Kind: "host", Name: h.Name}, "", api.AuditSuccess,
		c.pendingMessage(last, next.Fence.Deadline, keeperArmed(h)))
	c.startHook(next)
	return nil
}

// pendingMessage says what follows a host's pending record.
func (c *Controller) pendingMessage(last, deadline time.Time, armed bool) string {
	msg := fmt.Sprintf("no heartbeat since %s; ", last.UTC().Format(time.RFC3339Nano))
	if c.cfg.OnTimeout && armed {
		return msg + "its keeper was armed: its HA vms are restarted elsewhere from " + deadline.Format(time.RFC3339Nano)
	}
	if c.cfg.OnTimeout {
		msg += "its keeper was not armed: "
	}
	return msg + "its HA vms are restarted elsewhere only once the fence hook reports it powered off"
}

// fence marks a host fenced, conditional on the host as read: a
// heartbeat since (which ends its pending record) refuses it.
func (c *Controller) fence(ctx context.Context, w store.Writer, h *api.Host, last, now time.Time, hook *hookRun, vms []*api.VM) error {
	next := store.Clone(h)
	f := *h.Fence
	f.State, f.FencedAt, f.By, f.VMs = api.FenceFenced, now.UTC(), "timeout", nil
	if hook != nil && hook.ok {
		f.By = "hook"
	}
	if hook != nil && hook.done {
		f.Hook = hook.out
	}
	next.Fence = &f
	if _, err := w.Txn(ctx, c.cfg.Hosts.OpUpdate(h.Name, next, h.Version)); err != nil {
		return fmt.Errorf("marking host %q fenced: %w", h.Name, err)
	}
	c.log.Warn("host fenced: restarting its HA vms elsewhere", "host", h.Name, "by", f.By, "last", last)
	c.cfg.Audit(ctx, "host.fence", api.Ref{Kind: "host", Name: h.Name}, "", api.AuditSuccess,
		fmt.Sprintf("fenced by %s; last heartbeat %s", f.By, last.UTC().Format(time.RFC3339Nano)))
	if f.By == "hook" {
		return nil // powered off: every HA VM may run elsewhere
	}
	for _, vm := range vms {
		if confirmed(vm) {
			continue
		}
		msg := fmt.Sprintf("not restarted: host %s was fenced on timeout and never reported generation %d, which made the vm HA (it reported %d), so its agent may not have stopped it; restart it once the host is known to be off",
			h.Name, vm.Spec.HASince, vm.Status.ObservedGeneration)
		c.log.Error("ha vm not restarted: its host never confirmed the policy", "vm", vm.Key(), "host", h.Name,
			"haSince", vm.Spec.HASince, "observed", vm.Status.ObservedGeneration)
		c.cfg.Audit(ctx, api.OpVMHARestart, api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID, Project: vm.Project}, "", api.AuditFailure, msg)
	}
	return nil
}

// confirmed tells whether a VM's host reported the generation that made
// it HA: only then did the host's agent know to stop it once cut off, and
// only then may a host fenced on timeout alone have it run elsewhere.
func confirmed(vm *api.VM) bool { return vm.Status.ObservedGeneration >= vm.Spec.HASince }

// unknown records a silent host as unknown, conditional on the host as
// read: nothing confirmed it powered off, so its HA VMs stay.
func (c *Controller) unknown(ctx context.Context, w store.Writer, h *api.Host, last time.Time, hook *hookRun) error {
	next := store.Clone(h)
	f := *h.Fence
	f.State = api.FenceUnknown
	if hook != nil && hook.done {
		f.Hook = hook.out
	}
	next.Fence = &f
	if _, err := w.Txn(ctx, c.cfg.Hosts.OpUpdate(h.Name, next, h.Version)); err != nil {
		return fmt.Errorf("marking host %q unknown: %w", h.Name, err)
	}
	why := "fencing on timeout is off"
	if c.cfg.OnTimeout {
		why = "its last heartbeat did not say its keeper was armed"
	}
	c.log.Error("host silent past T_fence and the margin, not known to be powered off: its HA vms are not restarted", "host", h.Name, "last", last, "why", why)
	c.cfg.Audit(ctx, "host.fence.unknown", api.Ref{Kind: "host", Name: h.Name}, "", api.AuditFailure,
		fmt.Sprintf("no heartbeat since %s, no fence hook reported it powered off and %s: its HA vms are not restarted elsewhere (power it off and run the hook)", last.UTC().Format(time.RFC3339Nano), why))
	return nil
}

// restart moves one HA VM of a fenced host to another host, as an
// operation, in a transaction that holds the host to its fenced record:
// once the host heartbeats again (returned), nothing more moves.
func (c *Controller) restart(ctx context.Context, w store.Writer, from, key string) error {
	unlock := c.cfg.LockVM(key)
	defer unlock()
	h, ok := c.cfg.Hosts.Get(from)
	if !ok || h.Fence == nil || h.Fence.State != api.FenceFenced {
		return nil
	}
	vm, ok := c.cfg.VMs.Get(key)
	if !ok || vm.Spec.Host != from || vm.Spec.HA != api.HARestart || vm.Spec.Deletion != nil || vm.Spec.Migration != nil ||
		(h.Fence.By != "hook" && !confirmed(vm)) {
		return nil
	}
	ref := api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID, Project: vm.Project}
	pools, err := c.poolsOf(vm)
	if err != nil {
		c.cfg.Audit(ctx, api.OpVMHARestart, ref, "", api.AuditFailure, err.Error())
		return err
	}
	filter := func(t *api.Host) bool {
		if t.Provider != nil || t.Name == from || (t.Fence != nil && t.Fence.State != api.FenceReturned) {
			return false
		}
		for _, p := range pools {
			if !slices.Contains(p.Spec.Hosts, t.Name) {
				return false
			}
		}
		return true
	}
	target, conds, release, err := c.cfg.Placer.Place(ctx, scheduler.Request{VCPUs: vm.Spec.VCPUs, MemoryMiB: vm.Spec.MemoryMiB}, filter)
	if err != nil {
		return fmt.Errorf("placing vm %q: %w", key, err)
	}
	defer release()
	now := c.cfg.Now().UTC()
	op := ops.NewOperation(api.OpVMHARestart, ref, map[string]string{"from": from, "to": target})
	nv := store.Clone(vm)
	nv.Spec.Host = target
	nv.Spec.HARestart = &api.HARestartRecord{Operation: op.ID, From: from, To: target, At: now}
	nv.Generation++
	nv.UpdatedAt = now
	// What the lost host observed says nothing of the new one.
	nv.Status = api.VMStatus{PowerState: api.PowerPending, Reason: fmt.Sprintf("restarting on host %s: host %s was fenced", target, from)}
	op.Status, op.StartedAt, op.TargetGeneration, op.Progress = api.OpRunning, now, nv.Generation, 10
	op.Deadline = now.Add(ops.DeadlineFor(api.OpVMCreate, nv))
	op.Message = fmt.Sprintf("restarting on host %s after host %s was fenced", target, from)
	nh := store.Clone(h)
	nh.Fence.VMs = append(nh.Fence.VMs, key)
	txn := append([]store.Op{
		c.cfg.Hosts.OpUpdate(from, nh, h.Version),
		c.cfg.VMs.OpUpdate(key, nv, vm.Version),
		c.cfg.Ops.OpCreate(op.ID, op),
	}, conds...)
	if _, err := w.Txn(ctx, txn...); err != nil {
		return fmt.Errorf("restarting vm %q on host %q: %w", key, target, err)
	}
	c.log.Warn("restarting ha vm on another host", "vm", key, "from", from, "to", target, "op", op.ID)
	c.cfg.Audit(ctx, api.OpVMHARestart, ref, op.ID, api.AuditSuccess, op.Message)
	return nil
}

// poolsOf are the pools of a VM's volumes, all shared; a VM with a disk
// of its own, or a volume elsewhere, cannot run on another host.
func (c *Controller) poolsOf(vm *api.VM) ([]*api.Pool, error) {
	if len(vm.Spec.Disks) > 0 {
		return nil, fmt.Errorf("vm %q has disks of its own on its lost host: not restarted elsewhere", vm.Key())
	}
	var out []*api.Pool
	for _, a := range vm.Spec.Volumes {
		v, ok := c.cfg.Volumes.Get(api.Key(vm.Project, a.Volume))
		if !ok {
			return nil, fmt.Errorf("vm %q: volume %q not found", vm.Key(), a.Volume)
		}
		p, ok := c.cfg.Pools.Get(v.Spec.Pool)
		if !ok || p.Spec.Kind != api.PoolShared {
			return nil, fmt.Errorf("vm %q: volume %q is not in a shared pool", vm.Key(), a.Volume)
		}
		out = append(out, p)
	}
	return out, nil
}

// hookOutcome is the fence hook's run for the host's current episode.
func (c *Controller) hookOutcome(h *api.Host) *hookRun {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.hooks[h.Name]
	if !ok || h.Fence == nil || !r.episode.Equal(h.Fence.Deadline) {
		return nil
	}
	cp := *r
	return &cp
}

// startHook runs the fence hook for a host's new pending record.
func (c *Controller) startHook(h *api.Host) {
	if len(c.cfg.Hook) == 0 {
		return
	}
	r := &hookRun{episode: h.Fence.Deadline}
	c.mu.Lock()
	c.hooks[h.Name] = r
	c.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.HookTimeout)
		defer cancel()
		args := append(slices.Clone(c.cfg.Hook[1:]), h.Name)
		cmd := exec.CommandContext(ctx, c.cfg.Hook[0], args...)
		// The address is what the host's agent reported: passed only when
		// it is an IP address, never as text the agent chose.
		cmd.Env = append(cmd.Environ(), "POLYVISOR_HOST="+h.Name, "POLYVISOR_HOST_ADDRESS="+hookAddress(h.Status.Address))
		out := &capped{max: hookOutputMax}
		cmd.Stdout, cmd.Stderr = out, out
		// A child that keeps the output open does not hold the hook.
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		msg := strings.TrimSpace(string(out.buf))
		if len(msg) > 512 {
			msg = msg[:512]
		}
		if err != nil {
			msg = fmt.Sprintf("failed: %v: %s", err, msg)
		} else {
			msg = "powered off: " + msg
		}
		c.log.Warn("fence hook ran", "host", h.Name, "ok", err == nil, "output", msg)
		c.mu.Lock()
		r.done, r.ok, r.out = true, err == nil, msg
		c.mu.Unlock()
	}()
}

// hookOutputMax is how much of the fence hook's output is kept.
const hookOutputMax = 64 << 10

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// hookAddress is a host's reported address for the fence hook: an IP
// address (the port dropped), or empty when it is anything else.
func hookAddress(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" {
		return ""
	}
	return ip.String()
}
