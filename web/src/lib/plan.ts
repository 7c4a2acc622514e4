// Reading capacity plans (docs/PLANNING.md) for the Capacity page: each
// host's demand before and after against what the plan may fill, and a
// cluster's forecast in words.
import type { ClusterForecast, Plan, PlanHost } from '../types';
import { level, percent, type Use } from './capacity';

// planUse is demand against a plan's capacity (the host at the target
// utilization), as a CapacityBar shows it.
export function planUse(used: number, capacity: number): Use {
  const pct = percent(used, capacity);
  return { used, capacity, physical: capacity, percent: pct, level: level(pct), known: true };
}

export type HostFate = 'keep' | 'free' | 'idle' | 'cordoned';

// fate says what the plan does with a host: keeps it running VMs, frees it
// (it runs VMs now and none after), leaves it idle, or leaves it out
// (cordoned).
export function fate(h: PlanHost): HostFate {
  if (h.cordoned) return 'cordoned';
  if (h.vmsAfter > 0) return 'keep';
  return h.vmsBefore > 0 ? 'free' : 'idle';
}

// planHeadline sums a plan up in one sentence.
export function planHeadline(p: Plan): string {
  const moves = p.moves?.length ?? 0;
  const un = p.unplaced?.length ?? 0;
  let s = `${p.hostsBefore} host${p.hostsBefore === 1 ? '' : 's'} now, ${p.hostsAfter} in the plan (no plan can use fewer than ${p.lowerBound}); ${moves} VM${moves === 1 ? '' : 's'} move, ${p.savings.hosts} host${p.savings.hosts === 1 ? '' : 's'} left empty`;
  if (un > 0) s += `; ${un} VM${un === 1 ? ' has' : 's have'} no host`;
  return s;
}

// runsOut tells when a cluster runs out, or why it does not.
export function runsOut(c: ClusterForecast): string {
  if (!c.runsOutAt) {
    const note = c.cpu.note || c.memory.note;
    return note ? `not at this trend (${note})` : 'not at this trend';
  }
  const t = c.runsOut === 'memory' ? c.memory : c.cpu;
  const day = c.runsOutAt.slice(0, 10);
  if (t.note === 'already over capacity') return `${c.runsOut}: already over capacity`;
  return `${c.runsOut} on ${day}${t.daysLeft !== undefined ? `, in ${t.daysLeft} days` : ''}`;
}
