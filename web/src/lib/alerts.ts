// What the dashboard flags: providers not connected, hosts not ready, and
// operations that failed in the last hour.
export interface AlertInput {
  providers: { name: string; status: { state: string; message?: string } }[];
  hosts: { name: string; provider?: { name: string }; status: { state: string } }[];
  ops: { id: string; kind: string; status: string; createdAt: string; finishedAt?: string; target: { name: string; project?: string }; error?: { message: string } }[];
}

export interface Alert {
  key: string;
  level: 'error' | 'warn';
  text: string;
}

export function alerts(input: AlertInput, now: number): Alert[] {
  const out: Alert[] = [];
  for (const p of input.providers) {
    if (p.status.state !== 'connected') {
      out.push({ key: `provider/${p.name}`, level: 'error', text: `Provider ${p.name} is ${p.status.state || 'unknown'}${p.status.message ? `: ${p.status.message}` : ''}` });
    }
  }
  for (const h of input.hosts) {
    if (h.status.state !== 'ready') out.push({ key: `host/${h.name}`, level: 'error', text: `Host ${h.name} is ${h.status.state || 'unknown'}` });
  }
  const since = now - 3600_000;
  for (const o of input.ops) {
    const t = Date.parse(o.finishedAt || o.createdAt);
    if (o.status === 'failed' && t >= since) {
      const target = o.target.project ? `${o.target.project}/${o.target.name}` : o.target.name;
      out.push({ key: `op/${o.id}`, level: 'warn', text: `${o.kind} of ${target} failed${o.error?.message ? `: ${o.error.message}` : ''}` });
    }
  }
  return out;
}

// countBy counts items by a key, sorted by key.
export function countBy<T>(xs: T[], key: (x: T) => string): [string, number][] {
  const m = new Map<string, number>();
  for (const x of xs) {
    const k = key(x);
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return [...m.entries()].sort((a, b) => a[0].localeCompare(b[0]));
}
