// The usage history's wire shape (api.UsageHistory) and what the charts
// draw of it: lines broken where nothing was sampled, and hosts' histories
// summed into a cluster's.
export interface UsagePoint {
  time: string;
  cpu: number;
  cpuMax: number;
  memoryBytes: number;
  memoryMaxBytes: number;
  samples: number;
}

export interface UsageHistory {
  kind: 'host' | 'vm';
  name: string;
  since: string;
  until: string;
  stepSeconds: number;
  points: UsagePoint[];
  cpus?: number;
  memoryMiB?: number;
}

// paths maps values at times to SVG polylines in a w×h box from since to
// until and 0 to top: one polyline per run of points no more than 1.5
// steps apart, so a gap in the history is a gap in the line.
export function paths(pts: { t: number; v: number }[], since: number, until: number, stepMs: number, top: number, w: number, h: number): string[] {
  if (until <= since || top <= 0) return [];
  const out: string[] = [];
  let cur: string[] = [];
  let last = -Infinity;
  for (const p of pts) {
    if (p.t < since || p.t > until) continue;
    if (p.t - last > 1.5 * stepMs && cur.length) {
      out.push(cur.join(' '));
      cur = [];
    }
    const x = ((p.t - since) / (until - since)) * w;
    const y = h - (Math.min(p.v, top) / top) * h;
    cur.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    last = p.t;
  }
  if (cur.length) out.push(cur.join(' '));
  // A lone point is drawn as a short flat line, to be seen.
  return out.map((s) => (s.includes(' ') ? s : `${s} ${(Number(s.split(',')[0]) + 2).toFixed(1)},${s.split(',')[1]}`));
}

// sumHistories adds hosts' histories point by point (at the same times),
// with their capacities: a cluster's history.
export function sumHistories(name: string, hs: UsageHistory[]): UsageHistory | undefined {
  if (hs.length === 0) return undefined;
  const at = new Map<string, UsagePoint>();
  for (const h of hs) {
    for (const p of h.points ?? []) {
      const cur = at.get(p.time);
      if (!cur) at.set(p.time, { ...p });
      else {
        cur.cpu += p.cpu;
        cur.cpuMax += p.cpuMax;
        cur.memoryBytes += p.memoryBytes;
        cur.memoryMaxBytes += p.memoryMaxBytes;
        cur.samples += p.samples;
      }
    }
  }
  return {
    kind: 'host',
    name,
    since: hs[0].since,
    until: hs[0].until,
    stepSeconds: Math.max(...hs.map((h) => h.stepSeconds)),
    points: [...at.values()].sort((a, b) => Date.parse(a.time) - Date.parse(b.time)),
    cpus: hs.reduce((n, h) => n + (h.cpus ?? 0), 0),
    memoryMiB: hs.reduce((n, h) => n + (h.memoryMiB ?? 0), 0),
  };
}
