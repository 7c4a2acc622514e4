// Migrations of VMs from other hypervisors in the console: how a migration
// and each of its VMs go, what may be done to it, and (for the import
// wizard) the choices made before a plan and what the plan says. The API
// decides anyway (docs/API.md, /v1/migrations).

export const migrationStates = ['uploading', 'planning', 'planned', 'pending', 'running', 'succeeded', 'failed', 'cancelled'];

export function migrationOver(state: string): boolean {
  return state === 'succeeded' || state === 'failed' || state === 'cancelled';
}

// migrationBusy: the server is at work on it (the list is read often).
export function migrationBusy(state: string): boolean {
  return state === 'planning' || state === 'pending' || state === 'running';
}

export interface MigrationLike {
  name: string;
  project?: string;
  createdAt?: string;
  spec: { source: { kind: string; provider?: string; url?: string; format?: string; files?: { name: string }[] | null }; host?: string; parallel: number; start?: boolean; cancel?: boolean; sourceDisposition?: string };
  status: {
    state: string;
    vms?: VMProgress[] | null;
    error?: string;
    reportedAt?: string;
    copyBytes?: number;
    estimatedSeconds?: number;
  };
}

export interface VMProgress {
  name: string;
  sourceName?: string;
  sourceID?: string;
  plan?: VMPlan;
  state: string;
  phase?: string;
  disk?: string;
  doneBytes?: number;
  totalBytes?: number;
  rate?: number;
  etaSeconds?: number;
  resumedBytes?: number;
  host?: string;
  notes?: string[] | null;
  error?: string;
}

// sourceText says where a migration's VMs come from.
export function sourceText(s: MigrationLike['spec']['source']): string {
  switch (s.kind) {
    case 'provider':
      return `provider ${s.provider ?? ''}`;
    case 'url':
      return `OVA at ${s.url ?? ''}`;
    case 'upload': {
      const files = (s.files ?? []).map((f) => f.name).join(', ');
      return `${s.format === 'disk' ? 'disk files' : 'OVA'} uploaded${files ? `: ${files}` : ''}`;
    }
  }
  return s.kind;
}

// mayCancel: a migration not yet over whose cancel was not asked yet.
export function mayCancel(m: MigrationLike): boolean {
  return !migrationOver(m.status.state) && !m.spec.cancel;
}

// mayStart: a planned migration waits to be started.
export function mayStart(m: MigrationLike): boolean {
  return m.status.state === 'planned' && !m.spec.start && !m.spec.cancel;
}

// stateText is the migration's state as shown: a cancel asked of a
// running one is said, since its runner stops only at its next report.
export function stateText(m: MigrationLike): string {
  if (m.spec.cancel && !migrationOver(m.status.state)) return 'cancelling';
  if (m.spec.start && m.status.state === 'planned') return 'pending';
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

// vmRows is the migration's VMs (known once it is planned).
export function vmRows(m: MigrationLike): VMProgress[] {
  return m.status.vms ?? [];
}

export interface Counts {
  total: number;
  blocked: number;
  succeeded: number;
  failed: number;
  running: number;
  pending: number;
  cancelled: number;
}

export function counts(m: MigrationLike): Counts {
  const c: Counts = { total: 0, blocked: 0, succeeded: 0, failed: 0, running: 0, pending: 0, cancelled: 0 };
  for (const st of vmRows(m)) {
    c.total++;
    if (blocked(st) && st.state !== 'succeeded' && st.state !== 'running') {
      c.blocked++;
      continue;
    }
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
  if (c.blocked) parts.push(`${c.blocked} cannot move`);
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
  if (t < 1) return 'under a second';
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
    .filter((m) => (!state || stateText(m) === state || m.status.state === state) && (!s || m.name.toLowerCase().includes(s) || sourceText(m.spec.source).toLowerCase().includes(s) || (m.spec.host ?? '').toLowerCase().includes(s)))
    .sort((a, b) => (b.createdAt ?? '').localeCompare(a.createdAt ?? '') || a.name.localeCompare(b.name));
}

// migrationPath is the page of one migration.
export function migrationPath(m: { name: string; project?: string }): string {
  return `/migrations/${encodeURIComponent(m.project ?? '')}/${encodeURIComponent(m.name)}`;
}

// ---- The import wizard ----

export type SourceKind = 'provider' | 'upload' | 'url';
export type Disposition = 'keep' | 'poweroff' | 'delete';

// ImportChoices are the wizard's inputs, as typed.
export interface ImportChoices {
  name: string;
  kind: SourceKind;
  // kind provider: the provider and its VMs, by the provider's ids.
  provider: string;
  vms: string[];
  // kind upload: an OVA, or one VM's disk files (the first its boot disk)
  // with the hardware they do not say.
  format: 'ova' | 'disk';
  files: { name: string; size: number }[];
  hwName: string;
  vcpus: string;
  memory: string;
  firmware: string;
  // macs are the VM's NICs, by MAC, comma or space separated (its disks
  // do not say them: they are on source network '', which '*' maps).
  macs: string;
  // kind url: an OVA's http(s) URL.
  url: string;
  // host '' lets the scheduler place each VM.
  host: string;
  // networkMap maps a source network onto "user" or a network of the
  // project; '*' maps every other one.
  networkMap: Record<string, string>;
  parallel: string;
  disposition: Disposition;
}

export const emptyChoices: ImportChoices = {
  name: '',
  kind: 'provider',
  provider: '',
  vms: [],
  format: 'ova',
  files: [],
  hwName: '',
  vcpus: '1',
  memory: '1024',
  firmware: 'bios',
  macs: '',
  url: '',
  host: '',
  networkMap: { '*': 'user' },
  parallel: '2',
  disposition: 'keep',
};

export const maxParallel = 32;
export const maxFiles = 16;

// migrationName proposes a name from the time: import-20261206-0812.
export function migrationName(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `import-${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}`;
}

export interface Problem {
  // field is the API's field the problem is about, so that a form shows
  // it where the API's own error would be.
  field: string;
  message: string;
}

const splitMACs = (s: string) => s.split(/[\s,]+/).filter(Boolean);

const int = (s: string) => (/^\s*\d+\s*$/.test(s) ? Number(s) : NaN);

// checkChoices finds what the wizard can tell is missing or wrong before
// asking for a plan; the API checks everything again.
export function checkChoices(c: ImportChoices): Problem[] {
  const out: Problem[] = [];
  if (!c.name.trim()) out.push({ field: 'name', message: 'name the migration' });
  switch (c.kind) {
    case 'provider':
      if (!c.provider) out.push({ field: 'source.provider', message: 'pick a provider' });
      else if (c.vms.length === 0) out.push({ field: 'source.vms', message: `pick the VMs of ${c.provider} to move` });
      break;
    case 'upload':
      if (c.files.length === 0) out.push({ field: 'source.files', message: c.format === 'ova' ? 'choose the OVA file' : 'choose the disk files' });
      else if (c.format === 'ova' && c.files.length > 1) out.push({ field: 'source.files', message: 'an OVA is one file' });
      else if (c.files.length > maxFiles) out.push({ field: 'source.files', message: `at most ${maxFiles} files` });
      else if (new Set(c.files.map((f) => f.name)).size !== c.files.length) out.push({ field: 'source.files', message: 'two files have the same name' });
      else if (c.files.some((f) => f.size <= 0)) out.push({ field: 'source.files', message: `${c.files.find((f) => f.size <= 0)!.name} is empty` });
      if (c.format === 'disk') {
        if (!(int(c.vcpus) >= 1)) out.push({ field: 'source.hardware.vcpus', message: 'vCPUs must be a whole number from 1' });
        if (!(int(c.memory) >= 1)) out.push({ field: 'source.hardware.memoryMiB', message: 'memory must be a whole number of MiB' });
        const bad = splitMACs(c.macs).find((m) => !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(m));
        if (bad !== undefined) out.push({ field: 'source.hardware.macs', message: `${bad} is not a MAC address (like 00:15:5d:01:02:03)` });
      }
      break;
    case 'url': {
      let u: URL | undefined;
      try {
        u = new URL(c.url.trim());
      } catch {
        u = undefined;
      }
      if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) out.push({ field: 'source.url', message: 'give the http(s) URL of an OVA' });
      else if (u.username || u.password) out.push({ field: 'source.url', message: 'a URL with a password would be kept in the record: give one without' });
      break;
    }
  }
  const par = int(c.parallel);
  if (!(par >= 1 && par <= maxParallel)) out.push({ field: 'parallel', message: `the wave size must be from 1 to ${maxParallel}` });
  for (const [src, dst] of Object.entries(c.networkMap)) if (!dst && src !== '*') out.push({ field: 'networkMap', message: `map source network ${src}` });
  if (c.disposition !== 'keep' && c.kind !== 'provider') out.push({ field: 'sourceDisposition', message: 'only a provider’s VMs can be powered off or deleted' });
  return out;
}

// createBody is the POST /v1/migrations body for the choices; the
// migration is planned, not started.
export function createBody(c: ImportChoices): Record<string, unknown> {
  const source: Record<string, unknown> = { kind: c.kind };
  if (c.kind === 'provider') {
    source.provider = c.provider;
    source.vms = c.vms.map((id) => ({ id }));
  } else if (c.kind === 'url') {
    source.url = c.url.trim();
  } else {
    source.format = c.format;
    source.files = c.files.map((f) => ({ name: f.name, sizeBytes: f.size }));
    if (c.format === 'disk') {
      const hw: Record<string, unknown> = { vcpus: int(c.vcpus) || 0, memoryMiB: int(c.memory) || 0, firmware: c.firmware || 'bios' };
      if (c.hwName.trim()) hw.name = c.hwName.trim();
      const macs = splitMACs(c.macs);
      if (macs.length) hw.macs = macs;
      source.hardware = hw;
    }
  }
  const body: Record<string, unknown> = { name: c.name.trim(), source, parallel: int(c.parallel) || 0 };
  if (c.host) body.host = c.host;
  const map = Object.fromEntries(Object.entries(c.networkMap).filter(([, v]) => v));
  if (Object.keys(map).length) body.networkMap = map;
  if (c.kind === 'provider' && c.disposition !== 'keep') body.sourceDisposition = c.disposition;
  return body;
}

// sourceNetworks lists the networks the NICs of the chosen VMs are on.
export function sourceNetworks(vms: { spec: { nics?: { network: string }[] | null } }[]): string[] {
  return [...new Set(vms.flatMap((v) => (v.spec.nics ?? []).map((n) => n.network)).filter(Boolean))].sort((a, b) => a.localeCompare(b));
}

// defaultNetworkMap maps each source network: as already chosen, else
// onto the project's network of the same name (or the same but for case),
// else as every other network ('*', 'user' unless chosen otherwise).
// Networks no longer among sources are dropped.
export function defaultNetworkMap(sources: string[], networks: string[], cur: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = { '*': cur['*'] ?? 'user' };
  for (const s of sources) {
    if (s === '*') continue;
    const same = networks.find((n) => n === s) ?? networks.find((n) => n.toLowerCase() === s.toLowerCase());
    out[s] = cur[s] ?? same ?? out['*'];
  }
  return out;
}

// VMPlan is the plan of one VM (status.vms[].plan).
export interface VMPlan {
  host?: string;
  vcpus: number;
  memoryMiB: number;
  firmware?: string;
  guestOS?: string;
  running?: boolean;
  disks?: { name: string; image: string; sourceBus?: string; bus: string; capacityBytes?: number }[] | null;
  nics?: { sourceNetwork: string; sourceModel?: string; network: string; mac?: string; model: string }[] | null;
  adaptation?: string;
  conversions?: string[] | null;
  warnings?: string[] | null;
  blockers?: string[] | null;
  copyBytes: number;
  estimatedSeconds: number;
}

export interface PlannedVM {
  name: string;
  sourceName?: string;
  plan?: VMPlan;
}

export function blocked(v: PlannedVM): boolean {
  return (v.plan?.blockers?.length ?? 0) > 0;
}

// waveSeconds is how long VMs taking these times take, parallel at once:
// each VM in order starts when the first of the waves' slots frees.
export function waveSeconds(times: number[], parallel: number): number {
  const n = Math.max(1, Math.floor(parallel) || 1);
  const slots: number[] = new Array(Math.min(n, Math.max(times.length, 1))).fill(0);
  for (const t of times) {
    let i = 0;
    for (let j = 1; j < slots.length; j++) if (slots[j] < slots[i]) i = j;
    slots[i] += Number.isFinite(t) && t > 0 ? t : 0;
  }
  return Math.max(0, ...slots);
}

export interface PlanSummary {
  total: number;
  runnable: number;
  blocked: number;
  warned: number;
  copyBytes: number;
  // seconds is the estimated copy time of the VMs that will move, in
  // waves of the migration's size.
  seconds: number;
  // networks lists each source network and what it maps onto.
  networks: [string, string][];
}

// summarizePlan totals a plan: what will move, what cannot, how much is
// copied and about how long it takes.
export function summarizePlan(vms: PlannedVM[], parallel: number): PlanSummary {
  const go = vms.filter((v) => v.plan && !blocked(v));
  const nets = new Map<string, string>();
  for (const v of vms) for (const n of v.plan?.nics ?? []) nets.set(n.sourceNetwork, n.network);
  return {
    total: vms.length,
    runnable: go.length,
    blocked: vms.filter(blocked).length,
    warned: vms.filter((v) => (v.plan?.warnings?.length ?? 0) > 0).length,
    copyBytes: go.reduce((a, v) => a + (v.plan!.copyBytes || 0), 0),
    seconds: waveSeconds(
      go.map((v) => v.plan!.estimatedSeconds),
      parallel,
    ),
    networks: [...nets.entries()].sort((a, b) => a[0].localeCompare(b[0])),
  };
}

// summaryText says the plan in a sentence.
export function summaryText(s: PlanSummary): string {
  if (s.total === 0) return 'The plan holds no VM.';
  const parts = [`${s.runnable} of ${s.total} VM${s.total === 1 ? '' : 's'} can move`];
  if (s.blocked) parts.push(`${s.blocked} cannot (below, with why)`);
  let out = parts.join('; ');
  if (s.runnable) {
    const e = eta(s.seconds);
    out += `: ${size(s.copyBytes)} to copy${e ? `, about ${e}` : ''}`;
  }
  return out + '.';
}
