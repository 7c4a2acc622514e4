// A project's quota beside its usage (GET /v1/projects/{p}/quota), for
// every limit the server knows: those it adds later show up too.
export type Numbers = Record<string, number | null | undefined>;

export interface QuotaReport {
  project: string;
  limits: Numbers;
  usage: Numbers;
}

export interface QuotaRow {
  key: string;
  label: string;
  unit: 'count' | 'MiB';
  used: number;
  limit?: number; // undefined: no limit
}

const known: [string, string, QuotaRow['unit']][] = [
  ['vcpus', 'vCPUs', 'count'],
  ['memoryMiB', 'Memory', 'MiB'],
  ['diskMiB', 'Disk', 'MiB'],
  ['vms', 'VMs', 'count'],
  ['imageStorageMiB', 'Image storage', 'MiB'],
  ['networks', 'Networks', 'count'],
  ['ports', 'Ports', 'count'],
  ['floatingIPs', 'Floating IPs', 'count'],
];

// optional are the limits of servers that count them: shown when the
// server reports them.
const optional = new Set(['imageStorageMiB', 'networks', 'ports', 'floatingIPs']);

// label names a key the console has no words for: "fooBarMiB" → "Foo bar".
function label(key: string): string {
  const words = key.replace(/MiB$/, '').replace(/([A-Z])/g, ' $1').toLowerCase().trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function quotaRows(r: QuotaReport): QuotaRow[] {
  const keys = new Set([...Object.keys(r.usage ?? {}), ...Object.keys(r.limits ?? {})]);
  const rows: QuotaRow[] = [];
  for (const [key, l, unit] of known) {
    if (!keys.has(key) && optional.has(key)) continue;
    keys.delete(key);
    rows.push(row(r, key, l, unit));
  }
  for (const key of [...keys].sort()) rows.push(row(r, key, label(key), key.endsWith('MiB') ? 'MiB' : 'count'));
  return rows;
}

function row(r: QuotaReport, key: string, l: string, unit: QuotaRow['unit']): QuotaRow {
  const lim = r.limits?.[key];
  return { key, label: l, unit, used: r.usage?.[key] ?? 0, limit: lim === null || lim === undefined ? undefined : lim };
}

export type QuotaForm = Record<string, string>;

export function quotaForm(rows: QuotaRow[]): QuotaForm {
  return Object.fromEntries(rows.map((r) => [r.key, r.limit === undefined ? '' : String(r.limit)]));
}

// quotaBody is the body of PUT /v1/projects/{p}/quota: blank is no
// limit (left out), a number is sent as typed (the API names a bad one);
// what is not a number at all is refused here, naming the field as the
// API would.
export function quotaBody(f: QuotaForm): { body: Numbers } | { field: string; message: string } {
  const body: Numbers = {};
  for (const [k, v] of Object.entries(f)) {
    const t = v.trim();
    if (t === '') continue;
    const n = Number(t);
    if (!Number.isFinite(n) || !Number.isInteger(n)) return { field: `quota.${k}`, message: `must be a whole number, or blank for no limit, not "${t}"` };
    body[k] = n;
  }
  return { body };
}
