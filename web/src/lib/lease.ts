// How long until a lease's next step, in words.
export interface Lease {
  expiresAt: string;
  deleteAt: string;
  stoppedAt?: string;
}

export function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s % 60}s`;
  return `${s}s`;
}

export function leaseText(l: Lease | undefined, now: number): string {
  if (!l) return 'no lease';
  const exp = Date.parse(l.expiresAt);
  const del = Date.parse(l.deleteAt);
  if (now < exp) return `expires in ${span(exp - now)}, deleted ${span(del - exp)} later`;
  if (now < del) return `expired, stopped; deleted in ${span(del - now)}`;
  return 'expired; being deleted';
}
