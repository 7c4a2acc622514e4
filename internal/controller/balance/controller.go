// Package balance runs the balancer (internal/balancer) as one of the
// leader's controllers: every interval it reads the estate and the VMs'
// demand, asks the balancer for moves, keeps them as the current
// recommendations (mode advise) or carries them out as migrate
// operations (mode automatic), and records the cycle in the store, where
// every server's API reads it.
package balance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/balancer"
	"github.com/polyvisor/polyvisor/internal/planner"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Keys of the records in the balance collection.
const (
	SettingsKey = "settings"
	StatusKey   = "status"
)

// Record is one record of the balance collection: the settings (written
// by a superadmin through the API) or the status (written by the leader).
type Record struct {
	Settings *api.BalanceSettings `json:"settings,omitempty"`
	Cycle    *api.BalanceCycle    `json:"cycle,omitempty"`
	Moves    []api.BalanceMove    `json:"moves,omitempty"`
	Version  int64                `json:"-"`
}

// The labels that constrain a VM's place, as plans read them.
const (
	labelPinned       = "plan.polyvisor.io/pinned"
	labelAffinity     = "plan.polyvisor.io/affinity"
	labelAntiAffinity = "plan.polyvisor.io/anti-affinity"
)

// Migrator starts a live migration of the VM with key to host target,
// as an operation stored through w (the leader's fenced writer), with the
// checks and admission of any migration.
type Migrator func(ctx context.Context, w store.Writer, key, target string) (*api.Operation, error)

// Audit records what the controller did, as the system.
type Audit func(ctx context.Context, action string, target api.Ref, opID, outcome, msg string)

// Config is what the controller works on.
type Config struct {
	Hosts   *store.Collection[api.Host]
	VMs     *store.Collection[api.VM]
	Ops     *store.Collection[api.Operation]
	Records *store.Collection[Record]
	// Demand tells what VMs use.
	Demand Demand
	// Busy says whether a VM has operations queued or running.
	Busy    func(key string) bool
	Migrate Migrator
	// Scheduler holds the overcommit ratios and the memory reserved on
	// each host, as the placer admits them.
	Scheduler scheduler.Config
	Audit     Audit
	// Tick is how often the controller looks at its settings (100 ms when
	// zero); a cycle runs when the interval has passed or the settings
	// changed.
	Tick   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Controller is the balancing controller.
type Controller struct {
	cfg Config
	log *slog.Logger
}

// New makes a controller; Lead runs it.
func New(cfg Config) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.Audit == nil {
		cfg.Audit = func(context.Context, string, api.Ref, string, string, string) {}
	}
	return &Controller{cfg: cfg, log: cfg.Logger}
}

// Settings are the settings in force: the stored ones, defaults filled in.
func Settings(records *store.Collection[Record]) api.BalanceSettings {
	var s api.BalanceSettings
	if rec, ok := records.Get(SettingsKey); ok && rec.Settings != nil {
		s = *rec.Settings
	}
	return WithDefaults(s)
}

// WithDefaults fills in the zero fields of settings.
func WithDefaults(s api.BalanceSettings) api.BalanceSettings {
	if s.Mode == "" {
		s.Mode = api.BalanceOff
	}
	if s.Aggressiveness == 0 {
		s.Aggressiveness = api.DefaultBalanceAggressiveness
	}
	if s.MaxMoves == 0 {
		s.MaxMoves = api.DefaultBalanceMaxMoves
	}
	if s.IntervalSeconds == 0 {
		s.IntervalSeconds = api.DefaultBalanceIntervalSeconds
	}
	if s.CooldownSeconds == 0 {
		s.CooldownSeconds = api.DefaultBalanceCooldownSeconds
	}
	if s.HotspotThreshold == 0 {
		s.HotspotThreshold = api.DefaultBalanceHotspotThreshold
	}
	return s
}

// Validate checks settings a superadmin gives, naming the field at fault.
func Validate(s api.BalanceSettings) error {
	switch s.Mode {
	case api.BalanceOff, api.BalanceAdvise, api.BalanceAutomatic:
	default:
		return api.Invalid("mode", "must be %s, %s or %s, not %q", api.BalanceOff, api.BalanceAdvise, api.BalanceAutomatic, s.Mode)
	}
	if s.Aggressiveness < 0 || s.Aggressiveness > 5 {
		return api.Invalid("aggressiveness", "must be from 1 to 5 (0 for the default, 3), not %d", s.Aggressiveness)
	}
	if s.MaxMoves < 0 || s.MaxMoves > api.MaxBalanceMaxMoves {
		return api.Invalid("maxMoves", "must be from 1 to %d (0 for the default, %d), not %d", api.MaxBalanceMaxMoves, api.DefaultBalanceMaxMoves, s.MaxMoves)
	}
	if s.IntervalSeconds != 0 && (s.IntervalSeconds < api.MinBalanceIntervalSeconds || s.IntervalSeconds > api.MaxBalanceIntervalSeconds) {
		return api.Invalid("intervalSeconds", "must be from %d to %d (0 for the default, %d), not %d", api.MinBalanceIntervalSeconds, api.MaxBalanceIntervalSeconds, api.DefaultBalanceIntervalSeconds, s.IntervalSeconds)
	}
	if s.CooldownSeconds < 0 || s.CooldownSeconds > api.MaxBalanceCooldownSeconds {
		return api.Invalid("cooldownSeconds", "must be from 0 to %d (0 for the default, %d), not %d", api.MaxBalanceCooldownSeconds, api.DefaultBalanceCooldownSeconds, s.CooldownSeconds)
	}
	if h := s.HotspotThreshold; h != h || h < 0 || h > 1 {
		return api.Invalid("hotspotThreshold", "must be in (0, 1] (0 for the default, %v), not %v", api.DefaultBalanceHotspotThreshold, h)
	}
	return nil
}

// Lead runs cycles until ctx ends (the term does), writing through w,
// the term's fenced writer.
func (c *Controller) Lead(ctx context.Context, w store.Writer) {
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	var last time.Time
	var lastSettings api.BalanceSettings
	var started []string
	for {
		set := Settings(c.cfg.Records)
		due := set != lastSettings || c.cfg.Now().Sub(last) >= time.Duration(set.IntervalSeconds)*time.Second
		switch {
		case !due:
		case set.Mode == api.BalanceOff:
			// Turned off: the recommendations go. Off from the start:
			// nothing is written.
			if cur, ok := c.cfg.Records.Get(StatusKey); ok && cur.Cycle != nil && cur.Cycle.Mode != api.BalanceOff {
				c.record(ctx, w, &api.BalanceCycle{At: c.cfg.Now().UTC(), Mode: api.BalanceOff}, nil)
			}
			lastSettings, last = set, c.cfg.Now()
		case c.inFlight(started):
			// The moves of the last cycle are still being made: the next
			// cycle decides from where they end.
		default:
			cycle, moves := c.Cycle(ctx, w, set)
			started = cycle.Started
			c.record(ctx, w, cycle, moves)
			lastSettings, last = set, c.cfg.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// inFlight says whether any of the operations is unfinished.
func (c *Controller) inFlight(ids []string) bool {
	for _, id := range ids {
		if op, ok := c.cfg.Ops.Get(id); ok && !op.Done() {
			return true
		}
	}
	return false
}

// record stores a cycle and its moves as the status, for every server's
// API.
func (c *Controller) record(ctx context.Context, w store.Writer, cycle *api.BalanceCycle, moves []api.BalanceMove) {
	rec := &Record{Cycle: cycle, Moves: moves}
	var err error
	if cur, ok := c.cfg.Records.Get(StatusKey); ok {
		_, err = w.Txn(ctx, c.cfg.Records.OpUpdate(StatusKey, rec, cur.Version))
	} else {
		_, err = w.Txn(ctx, c.cfg.Records.OpCreate(StatusKey, rec))
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrConflict) {
		c.log.Warn("recording the balancing cycle", "err", err)
	}
}

// Cycle runs one cycle with the given settings: in automatic mode it
// starts the moves as migrate operations through w.
func (c *Controller) Cycle(ctx context.Context, w store.Writer, set api.BalanceSettings) (*api.BalanceCycle, []api.BalanceMove) {
	now := c.cfg.Now()
	in, notes := c.input(ctx)
	res, err := balancer.Balance(in, balancer.Options{
		Aggressiveness: set.Aggressiveness, MaxMoves: set.MaxMoves, HotspotThreshold: set.HotspotThreshold,
		Cooldown: time.Duration(set.CooldownSeconds) * time.Second, PowerSaving: set.PowerSaving, Now: now,
	})
	cycle := &api.BalanceCycle{At: now.UTC(), Mode: set.Mode, Notes: notes}
	if err != nil {
		cycle.Notes = append(cycle.Notes, "balancing: "+err.Error())
		return cycle, nil
	}
	cycle.Imbalance, cycle.ImbalanceAfter, cycle.Hosts = res.Imbalance, res.ImbalanceAfter, res.Hosts
	cycle.Measured, cycle.VMs = res.Measured, len(in.VMs)
	moves := res.Moves
	if moves == nil {
		moves = []api.BalanceMove{}
	}
	if set.Mode != api.BalanceAutomatic {
		return cycle, moves
	}
	for i := range moves {
		mv := &moves[i]
		if c.cfg.Busy(mv.VM) {
			cycle.Notes = append(cycle.Notes, fmt.Sprintf("%s: not moved, an operation started meanwhile", mv.VM))
			continue
		}
		op, err := c.cfg.Migrate(ctx, w, mv.VM, mv.To)
		project, name := api.SplitKey(mv.VM)
		ref := api.Ref{Kind: "vm", Name: name, Project: project}
		if err != nil {
			cycle.Notes = append(cycle.Notes, fmt.Sprintf("%s: migrating to %s: %v", mv.VM, mv.To, err))
			c.cfg.Audit(ctx, api.OpVMMigrate, ref, "", "failed", "balancing: "+mv.Reason+": "+err.Error())
			continue
		}
		mv.Operation = op.ID
		cycle.Started = append(cycle.Started, op.ID)
		c.log.Info("balancing: migrating vm", "vm", mv.VM, "from", mv.From, "to", mv.To, "kind", mv.Kind, "op", op.ID)
		c.cfg.Audit(ctx, api.OpVMMigrate, ref, op.ID, "started", "balancing: "+mv.Reason)
	}
	return cycle, moves
}

// input is the balancer's view of the estate: every host, every VM not
// being deleted, what each running VM of Polyvisor's uses, and why a VM
// may not move now.
func (c *Controller) input(ctx context.Context) (balancer.Input, []string) {
	cfg := c.cfg.Scheduler
	cpuRatio, memRatio, reserved := cfg.CPUOvercommit, cfg.MemoryOvercommit, cfg.ReservedMemoryMiB
	if cpuRatio <= 0 {
		cpuRatio = scheduler.DefaultCPUOvercommit
	}
	if memRatio <= 0 {
		memRatio = scheduler.DefaultMemoryOvercommit
	}
	if reserved == 0 {
		reserved = scheduler.DefaultReservedMemoryMiB
	}
	reserved = max(reserved, 0)
	in := balancer.Input{Fixed: map[string]string{}, Moved: map[string]time.Time{}}
	for _, h := range c.cfg.Hosts.Select(func(*api.Host) bool { return true }) {
		ph := planner.Host{Name: h.Name, CPUs: float64(h.Status.CPUs), MemoryMiB: float64(max(h.Status.MemoryMiB-reserved, 0)),
			CPUOvercommit: cpuRatio, MemoryOvercommit: memRatio, Labels: h.Labels,
			Cordoned: h.Spec.Unschedulable || h.Status.State != api.HostReady || (h.Fence != nil && h.Fence.State != api.FenceReturned)}
		if h.Provider != nil {
			ph.Provider = h.Provider.Name
		}
		in.Hosts = append(in.Hosts, ph)
	}
	var running []*api.VM
	for _, v := range c.cfg.VMs.Select(func(v *api.VM) bool { return v.Spec.Deletion == nil }) {
		key := v.Key()
		pv := planner.VM{Name: key, Host: v.Spec.Host, VCPUs: float64(v.Spec.VCPUs), MemoryMiB: float64(v.Spec.MemoryMiB),
			Pinned: v.Labels[labelPinned] == "true", Affinity: v.Labels[labelAffinity]}
		if g := v.Labels[labelAntiAffinity]; g != "" {
			pv.AntiAffinity = []string{g}
		}
		if v.Spec.Provider != nil {
			pv.Provider = v.Spec.Provider.Name
		}
		if why := c.fixed(v); why != "" {
			in.Fixed[key] = why
		}
		// A VM that may not move still loads its host: its demand counts.
		if v.Spec.Provider == nil && v.Spec.Migration == nil && v.Status.PowerState == api.PowerRunning {
			running = append(running, v)
		}
		in.VMs = append(in.VMs, pv)
	}
	var notes []string
	demand, dnotes, err := c.cfg.Demand.VMDemand(ctx, running)
	notes = append(notes, dnotes...)
	if err != nil {
		notes = append(notes, "reading demand: "+err.Error())
	}
	for i := range in.VMs {
		if d, ok := demand[in.VMs[i].Name]; ok {
			in.VMs[i].Demand = &planner.Usage{CPU: d.CPU, MemoryMiB: d.MemoryMiB}
		}
	}
	for _, op := range c.cfg.Ops.Select(func(o *api.Operation) bool {
		return (o.Kind == api.OpVMMigrate || o.Kind == api.OpVMHARestart) && o.Status == api.OpSucceeded
	}) {
		key := api.Key(op.Target.Project, op.Target.Name)
		if op.FinishedAt.After(in.Moved[key]) {
			in.Moved[key] = op.FinishedAt
		}
	}
	slices.Sort(notes)
	return in, notes
}

// fixed says why a VM may not move now, or "" when it may: the rules of
// a live migration (Polyvisor's own, running, no volumes), and no
// operation in flight.
func (c *Controller) fixed(v *api.VM) string {
	switch {
	case v.Spec.Provider != nil:
		return "belongs to provider " + v.Spec.Provider.Name
	case v.Spec.Migration != nil:
		return "migrating"
	case c.cfg.Busy(v.Key()):
		return "an operation is in flight"
	case v.Spec.PowerState != api.PowerRunning || v.Status.PowerState != api.PowerRunning:
		return "not running: only a running vm migrates live"
	case len(v.Spec.Volumes) > 0 || len(v.Status.Volumes) > 0:
		return "volumes attached: a live migration does not carry them yet"
	}
	return ""
}
