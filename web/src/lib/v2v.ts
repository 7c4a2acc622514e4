// Migrations of VMs from other hypervisors in the console: how a migration
// and each of its VMs go, what may be done to it, and (for the import
// wizard) the choices made before a plan and what the plan says. The API
// decides anyway (docs/API.md, /v1/migrations).

export const migrationStates = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];

export function migrationOver(state: string): boolean {
  return state === 'succeeded' || state === 'failed' || state === 'cancelled';
}

export interface MigrationLike {
  name: string;
  project?: string;
  createdAt?: string;
  spec: { source: string; host: string; parallel: number; vms: { name: string; sourceName?: string; copyBytes?: number }[] | null; cancel?: boolean };
  status: {
    state: string;
    vms?: VMProgress[] | null;
    error?: string;
    reportedAt?: string;
  };
}

export interface VMProgress {
  name: string;
  state: string;
  phase?: string;
  disk?: string;
  doneBytes?: number;
  totalBytes?: number;
  rate?: number;
  etaSeconds?: number;
  resumedBytes?: number;
  error?: string;
}

// mayCancel: a migration not yet over whose cancel was not asked yet.
export function mayCancel(m: MigrationLike): boolean {
  return !migrationOver(m.status.state) && !m.spec.cancel;
}

// mayDelete: the API keeps a running migration's record until its cancel
// was asked.
export function mayDelete(m: MigrationLike): boolean {
  return m.status.state !== 'running' || !!m.spec.cancel;
}

// stateText is the migration's state as shown: a cancel asked of a
// running one is said, since its runner stops only at its next report.
export function stateText(m: MigrationLike): string {
  if (m.spec.cancel && !migrationOver(m.status.state)) return 'cancelling';
  return m.status.state || 'pending';
}

// silentFor is how many seconds a running migration's runner has not
// reported, or 0 when that is not worth saying (under 30 s, or not running).
export function silentFor(m: MigrationLike, now: number): number {
  if (m.status.state !== 'running' || !m.status.reportedAt) return 0;
  const t = Date.parse(m.status.reportedAt);
  if (!Number.isFinite(t) || t <= 0) return 0;
  const s = Math.floor((now - t) / 1000);
  return s >= 30 ? s : 0;
}

// vmRows pairs each VM of the spec with its status (by name; the API
// keeps them in the same order), a VM not yet reported being pending.
export function vmRows(m: MigrationLike): { vm: { name: string; sourceName?: string; copyBytes?: number }; st: VMProgress }[] {
  const st = new Map((m.status.vms ?? []).map((v) => [v.name, v]));
  return (m.spec.vms ?? []).map((vm) => ({ vm, st: st.get(vm.name) ?? { name: vm.name, state: 'pending' } }));
}

export interface Counts {
  total: number;
  succeeded: number;
  failed: number;
  running: number;
  pending: number;
  cancelled: number;
}

export function counts(m: MigrationLike): Counts {
  const c: Counts = { total: 0, succeeded: 0, failed: 0, running: 0, pending: 0, cancelled: 0 };
  for (const { st } of vmRows(m)) {
    c.total++;
    if (st.state === 'succeeded' || st.state === 'failed' || st.state === 'running' || st.state === 'cancelled') c[st.state]++;
    else c.pending++;
  }
  return c;
}

// countsText tells in a few words how far the VMs are.
export function countsText(c: Counts): string {
  const parts = [`${c.succeeded} of ${c.total} VM${c.total === 1 ? '' : 's'} moved`];
  if (c.running) parts.push(`${c.running} copying`);
  if (c.failed) parts.push(`${c.failed} failed`);
  if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  return parts.join(', ');
}

// percent of a phase's bytes done, 0 to 100, or undefined when the total
// is not known.
export function percent(p: { doneBytes?: number; totalBytes?: number }): number | undefined {
  const t = p.totalBytes ?? 0;
  if (!(t > 0)) return undefined;
  const d = Math.max(0, Math.min(p.doneBytes ?? 0, t));
  return Math.floor((d / t) * 100);
}

// rate shows bytes a second in binary units.
export function rate(bps: number | undefined): string {
  if (bps === undefined || !Number.isFinite(bps) || bps <= 0) return '';
  const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s'];
  let v = bps;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1).replace(/\.0$/, '') : Math.round(v)} ${units[i]}`;
}

// eta shows a time left in seconds as people read it ("1 h 5 min",
// "3 min 20 s", "40 s"); '' when unknown.
export function eta(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s) || s <= 0) return '';
  const t = Math.round(s);
  if (t < 60) return `${t} s`;
  if (t < 3600) {
    const m = Math.floor(t / 60);
    const r = t % 60;
    return r ? `${m} min ${r} s` : `${m} min`;
  }
  const h = Math.floor(t / 3600);
  const m = Math.round((t % 3600) / 60);
  if (h >= 48) return `${Math.round(t / 86400)} days`;
  return m ? `${h} h ${m} min` : `${h} h`;
}

const gib = 2 ** 30;
const size = (b: number) => (b >= gib ? `${(b / gib).toFixed(1)} GiB` : `${Math.round(b / 2 ** 20)} MiB`);

// phaseText tells how one VM's move goes: its phase and disk, the bytes
// of the phase, the rate and the time left; a resumed copy says where it
// started.
export function phaseText(p: VMProgress): string {
  if (p.state === 'failed') return p.error ? `failed: ${p.error}` : 'failed';
  if (p.state === 'succeeded') return 'done';
  if (p.state === 'cancelled') return 'cancelled';
  if (!p.phase) return p.state === 'running' ? 'starting' : 'waiting';
  const parts = [p.disk ? `${p.phase} ${p.disk}` : p.phase];
  if ((p.totalBytes ?? 0) > 0) parts.push(`${size(Math.min(p.doneBytes ?? 0, p.totalBytes!))} of ${size(p.totalBytes!)}`);
  const r = rate(p.rate);
  if (r) parts.push(r);
  const e = eta(p.etaSeconds);
  if (e) parts.push(`${e} left`);
  if ((p.resumedBytes ?? 0) > 0) parts.push(`resumed at ${size(p.resumedBytes!)}`);
  return parts.join(' · ');
}

// filterMigrations keeps the migrations in a state (any when '') whose
// name, source or host holds q, newest first.
export function filterMigrations<T extends MigrationLike>(l: T[], state: string, q: string): T[] {
  const s = q.trim().toLowerCase();
  return l
    .filter((m) => (!state || stateText(m) === state || m.status.state === state) && (!s || m.name.toLowerCase().includes(s) || m.spec.source.toLowerCase().includes(s) || m.spec.host.toLowerCase().includes(s)))
    .sort((a, b) => (b.createdAt ?? '').localeCompare(a.createdAt ?? '') || a.name.localeCompare(b.name));
}

// migrationPath is the page of one migration.
export function migrationPath(m: { name: string; project?: string }): string {
  return `/migrations/${encodeURIComponent(m.project ?? '')}/${encodeURIComponent(m.name)}`;
}
