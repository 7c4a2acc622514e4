// How long until a lease's next step, in words.
export interface Lease {
  expiresAt: string;
  deleteAt: string;
  stoppedAt?: string;
}

// span writes a duration with its two largest units: "2d 3h", "4m 05s".
export function span(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${two(m)}m`;
  if (m > 0) return `${m}m ${two(sec)}s`;
  return `${sec}s`;
}

export function leaseText(l: Lease | undefined, now: number): string {
  if (!l) return 'no lease';
  const exp = Date.parse(l.expiresAt);
  const del = Date.parse(l.deleteAt);
  if (now < exp) return `expires in ${span(exp - now)}, deleted ${span(del - exp)} later`;
  if (now < del) return `expired${l.stoppedAt ? ' and stopped' : ''}; deleted in ${span(del - now)}`;
  return 'expired; being deleted';
}
