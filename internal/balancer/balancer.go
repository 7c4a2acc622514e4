// Package balancer proposes live migrations that even out the load of
// Polyvisor's hosts: it removes hotspots (a host whose VMs' demand passes
// a threshold of its CPU or memory) and imbalance (the spread of the
// hosts' load), and in a power-saving mode empties lightly loaded hosts.
//
// It is pure logic over a read-only snapshot (the planner's: hosts with
// their capacity, overcommit, cordons and labels; VMs with their
// allocation, host, demand and constraints): no I/O, no clock (the time
// is an input), no randomness. The same input always gives the same moves.
//
// Hysteresis keeps it from oscillating: a move must gain at least a
// minimum, imbalance below a tolerance is left alone, a VM that moved
// within the cooldown stays, and no move fills a host past the hotspot
// threshold (so relieving one host never makes another).
package balancer

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/planner"
)

// Move is one recommended migration.
type Move = api.BalanceMove

// Load is a host's share of CPU and memory in use.
type Load = api.BalanceLoad

// Input is what a cycle decides from.
type Input struct {
	// Snapshot is the estate: a VM's Demand, when set, is what it uses
	// (cores, MiB); without it the VM counts at its allocation (its vCPUs
	// under the host's CPU overcommit, its memory).
	planner.Snapshot
	// Fixed are VMs that may not move now, with why (an operation in
	// flight, volumes attached, not running), by name.
	Fixed map[string]string
	// Moved is when each VM last moved, by name: one moved within the
	// cooldown stays where it is.
	Moved map[string]time.Time
}

// Options tune a cycle.
type Options struct {
	// Aggressiveness is 1 (hotspots only) to 5; 0 means 3.
	Aggressiveness int
	// MaxMoves is the cycle's move budget; 0 means 4.
	MaxMoves int
	// HotspotThreshold is the load above which a host is a hotspot;
	// 0 means 0.8.
	HotspotThreshold float64
	// Cooldown is how long a moved VM stays put.
	Cooldown time.Duration
	// PowerSaving also empties lightly loaded hosts.
	PowerSaving bool
	// Now is the time of the cycle (for the cooldown).
	Now time.Time
}

// Result is what a cycle proposes.
type Result struct {
	Moves []Move
	// Imbalance and ImbalanceAfter are the standard deviation of the
	// hosts' load before and after the moves.
	Imbalance, ImbalanceAfter float64
	Hosts                     []api.BalanceHost
	// Measured counts the VMs with a measured demand.
	Measured int
}

// level is what one aggressiveness means.
type level struct {
	// tolerance: an imbalance (standard deviation of load) at or below it
	// is left alone. Infinite at level 1.
	tolerance float64
	// minGain: the least decrease of the cost a move must bring.
	minGain float64
}

var levels = [...]level{
	{tolerance: math.Inf(1), minGain: 0.02},
	{tolerance: 0.20, minGain: 0.02},
	{tolerance: 0.10, minGain: 0.01},
	{tolerance: 0.05, minGain: 0.005},
	{tolerance: 0.02, minGain: 0.002},
}

// hotspotWeight makes relieving a hotspot outweigh any imbalance.
const hotspotWeight = 10

// Candidate bounds: moves are sought from the most loaded hosts to the
// least loaded ones, which is where the best move lies when load is
// measured as a share of capacity.
const (
	maxSources = 8
	maxTargets = 16
)

// PowerLowLoad is the load under which a host is emptied in power-saving
// mode; its VMs go only where they leave the target at most
// powerFillFactor of the hotspot threshold, and only while the hosts
// left would be loaded at most powerMeanLoad on average.
const (
	PowerLowLoad    = 0.25
	powerFillFactor = 0.9
	powerMeanLoad   = 0.6
)

// Balance proposes the moves of one cycle.
func Balance(in Input, o Options) (Result, error) {
	o, lv, err := withDefaults(o)
	if err != nil {
		return Result{}, err
	}
	st, err := newState(in, o)
	if err != nil {
		return Result{}, err
	}
	res := Result{Imbalance: st.imbalance(), Measured: st.measured, Hosts: st.report()}
	budget := o.MaxMoves
	moved := map[int]bool{}
	if o.PowerSaving {
		for _, mv := range st.powerMoves(budget, o) {
			res.Moves = append(res.Moves, mv)
			moved[st.vmIndex[mv.VM]] = true
			budget--
		}
	}
	for budget > 0 {
		c, ok := st.best(moved, lv, o)
		if !ok && st.wake() {
			// A hotspot the active hosts cannot relieve wakes a host on
			// standby (power saving).
			c, ok = st.best(moved, lv, o)
		}
		if !ok {
			break
		}
		res.Moves = append(res.Moves, st.apply(c))
		moved[c.vm] = true
		budget--
	}
	res.ImbalanceAfter = st.imbalance()
	return res, nil
}

func withDefaults(o Options) (Options, level, error) {
	if o.Aggressiveness == 0 {
		o.Aggressiveness = api.DefaultBalanceAggressiveness
	}
	if o.Aggressiveness < 1 || o.Aggressiveness > len(levels) {
		return o, level{}, &planner.InputError{Field: "aggressiveness", Message: fmt.Sprintf("must be from 1 to %d, not %d", len(levels), o.Aggressiveness)}
	}
	if o.MaxMoves == 0 {
		o.MaxMoves = api.DefaultBalanceMaxMoves
	}
	if o.MaxMoves < 0 {
		return o, level{}, &planner.InputError{Field: "maxMoves", Message: fmt.Sprintf("must be 0 (the default) or more, not %d", o.MaxMoves)}
	}
	if o.HotspotThreshold == 0 {
		o.HotspotThreshold = api.DefaultBalanceHotspotThreshold
	}
	if math.IsNaN(o.HotspotThreshold) || o.HotspotThreshold <= 0 || o.HotspotThreshold > 1 {
		return o, level{}, &planner.InputError{Field: "hotspotThreshold", Message: fmt.Sprintf("must be in (0, 1], not %v", o.HotspotThreshold)}
	}
	return o, levels[o.Aggressiveness-1], nil
}

// MoveID names a move by its VM, source and target.
func MoveID(vm, from, to string) string {
	sum := sha256.Sum256([]byte(vm + "\x00" + from + "\x00" + to))
	return hex.EncodeToString(sum[:6])
}

// candidate is one move under evaluation.
type candidate struct {
	vm, to int
	gain   float64
	kind   string
}

// best finds the move with the largest gain that is worth making, or
// none. Ties go to the VM, then the target, first by name.
func (st *state) best(moved map[int]bool, lv level, o Options) (candidate, bool) {
	hot := st.hotspots()
	balancing := st.imbalance() > lv.tolerance
	if len(hot) == 0 && !balancing {
		return candidate{}, false
	}
	sources := st.byLoad(true, maxSources)
	for _, h := range hot {
		if !slices.Contains(sources, h) {
			sources = append(sources, h)
		}
	}
	targets := st.byLoad(false, maxTargets)
	base := st.cost()
	var found candidate
	ok := false
	for _, s := range sources {
		sourceHot := st.hot(s)
		if !sourceHot && !balancing {
			continue
		}
		for _, v := range st.hosts[s].vms {
			if moved[v] || !st.movable(v) {
				continue
			}
			for _, t := range targets {
				if t == s || !st.fits(v, t, o.HotspotThreshold) {
					continue
				}
				gain := base - st.costAfter(v, s, t)
				if gain < lv.minGain {
					continue
				}
				kind := api.BalanceImbalance
				if sourceHot {
					kind = api.BalanceHotspot
				}
				c := candidate{vm: v, to: t, gain: gain, kind: kind}
				if !ok || better(st, c, found) {
					found, ok = c, true
				}
			}
		}
	}
	return found, ok
}

// better orders candidates: larger gain, then VM name, then target name.
func better(st *state, a, b candidate) bool {
	if d := a.gain - b.gain; math.Abs(d) > 1e-12 {
		return d > 0
	}
	if c := cmp.Compare(st.vms[a.vm].name, st.vms[b.vm].name); c != 0 {
		return c < 0
	}
	return st.hosts[a.to].name < st.hosts[b.to].name
}

// apply makes a move in the state and describes it.
func (st *state) apply(c candidate) Move {
	v := &st.vms[c.vm]
	s, t := v.host, c.to
	before := st.imbalance()
	fb, tb := st.load(s), st.load(t)
	st.move(c.vm, t)
	mv := Move{
		ID: MoveID(v.name, st.hosts[s].name, st.hosts[t].name), VM: v.name,
		From: st.hosts[s].name, To: st.hosts[t].name, Kind: c.kind, Gain: round(c.gain),
		Demand: api.PlanUsage{CPU: round(v.cpu), MemoryMiB: round(v.mem)}, DemandSource: v.source,
		ImbalanceBefore: round(before), ImbalanceAfter: round(st.imbalance()),
		FromBefore: roundLoad(fb), FromAfter: roundLoad(st.load(s)), ToBefore: roundLoad(tb), ToAfter: roundLoad(st.load(t)),
	}
	switch c.kind {
	case api.BalanceHotspot:
		mv.Reason = fmt.Sprintf("host %s is a hotspot (CPU %s, memory %s); moving %s to %s brings it to CPU %s, memory %s",
			mv.From, pct(fb.CPU), pct(fb.Memory), v.name, mv.To, pct(mv.FromAfter.CPU), pct(mv.FromAfter.Memory))
	default:
		mv.Reason = fmt.Sprintf("host load is uneven (spread %s); %s on %s (CPU %s, memory %s) to %s (CPU %s, memory %s) brings the spread to %s",
			pct(before), v.name, mv.From, pct(fb.CPU), pct(fb.Memory), mv.To, pct(tb.CPU), pct(tb.Memory), pct(st.imbalance()))
	}
	return mv
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }

func round(f float64) float64 { return math.Round(f*1e4) / 1e4 }

func roundLoad(l Load) Load { return Load{CPU: round(l.CPU), Memory: round(l.Memory)} }
