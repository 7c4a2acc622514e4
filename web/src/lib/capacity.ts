// A host's allocation read against what the scheduler offers on it
// (status.capacity: CPUs times the overcommit ratio, memory less the
// host's reservation), not against its physical CPUs: under the default
// 4x CPU overcommit, 8 vCPUs on 4 CPUs is half full, not 200 %.
export interface HostLike {
  name: string;
  version?: number;
  status: {
    cpus: number;
    memoryMiB: number;
    allocated?: { vcpus: number; memoryMiB: number; vms: number };
    capacity?: { vcpus: number; memoryMiB: number };
  };
}

export type Level = 'ok' | 'warm' | 'hot';

export interface Use {
  used: number;
  // capacity is what the allocation is measured against; physical the
  // host's own amount, told beside it.
  capacity: number;
  physical: number;
  percent: number;
  level: Level;
  // known is false when the server did not say what it offers (an older
  // server): the physical amount stands in, and the view says so.
  known: boolean;
}

export function percent(used: number, capacity: number): number {
  if (!(capacity > 0)) return used > 0 ? Infinity : 0;
  return Math.round((used / capacity) * 100);
}

// level colours a use: past 90 % of what is schedulable is hot, past 75 % warm.
export function level(pct: number): Level {
  return pct > 90 ? 'hot' : pct > 75 ? 'warm' : 'ok';
}

function use(used: number, capacity: number | undefined, physical: number): Use {
  const known = capacity !== undefined && capacity > 0;
  const c = known ? capacity : physical;
  const pct = percent(used, c);
  return { used, capacity: c, physical, percent: pct, level: level(pct), known };
}

export function hostUse(h: HostLike): { vcpus: Use; memory: Use } {
  const a = h.status.allocated;
  const c = h.status.capacity;
  return {
    vcpus: use(a?.vcpus ?? 0, c?.vcpus, h.status.cpus),
    memory: use(a?.memoryMiB ?? 0, c?.memoryMiB, h.status.memoryMiB),
  };
}

// ratio is the overcommit a capacity shows ("4×"), or "" when there is none to tell.
export function ratio(u: Use): string {
  if (!u.known || !(u.physical > 0)) return '';
  const r = u.capacity / u.physical;
  return `${Number.isInteger(r) ? r : r.toFixed(2).replace(/0+$/, '')}×`;
}

// capacityNote says how the capacity relates to the host's own amount:
// multiplied by an overcommit, or less what is kept for the host.
export function capacityNote(u: Use, f: (n: number) => string = String): string {
  if (!u.known) return `of ${f(u.physical)} physical (the server does not tell what it offers)`;
  if (u.capacity > u.physical) return `${f(u.physical)} physical × ${ratio(u).replace('×', '')} overcommit`;
  if (u.capacity < u.physical) return `${f(u.physical)} physical, less ${f(u.physical - u.capacity)} kept for the host`;
  return `${f(u.physical)} physical`;
}

// free is what is left of a use: room for more, never below zero.
export function free(u: Use): number {
  return Math.max(0, u.capacity - u.used);
}

// carryServerView: hosts in the event stream are the stored objects,
// without what the server adds when it answers (allocation, capacity).
// Until the host is read again, keep those of the copy shown.
export function carryServerView<T extends HostLike>(prev: T | undefined, next: T): T {
  if (!prev) return next;
  const st = { ...next.status };
  if (prev.status.allocated) st.allocated = prev.status.allocated;
  if (!st.capacity?.vcpus && prev.status.capacity && next.status.cpus === prev.status.cpus && next.status.memoryMiB === prev.status.memoryMiB) {
    st.capacity = prev.status.capacity;
  }
  return { ...next, status: st };
}
