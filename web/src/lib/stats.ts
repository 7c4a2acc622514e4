// Turns usage samples into the series the sparklines draw.
export interface Sample {
  time: string;
  cpuSeconds: number;
  memoryBytes: number;
  vcpus: number;
}

// cpuPercent is the CPU use between consecutive samples, in percent of the
// VM's vCPUs (100 = all of them busy).
export function cpuPercent(samples: Sample[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (Date.parse(samples[i].time) - Date.parse(samples[i - 1].time)) / 1000;
    const dc = samples[i].cpuSeconds - samples[i - 1].cpuSeconds;
    if (dt <= 0 || dc < 0) continue;
    out.push(Math.min(100, (dc / dt / Math.max(1, samples[i].vcpus)) * 100));
  }
  return out;
}

// sparkPoints maps values to an SVG polyline's points in a w×h box (max at
// the top; the scale's top is at least floor).
export function sparkPoints(values: number[], w: number, h: number, floor = 1): string {
  if (values.length === 0) return '';
  const top = Math.max(floor, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  return values.map((v, i) => `${(i * step).toFixed(1)},${(h - (v / top) * h).toFixed(1)}`).join(' ');
}

// usageNeverComes tells whether a refused sample means no sample will
// come for this VM (its driver or provider reports none, or it is gone),
// rather than not yet (409: its host does not report it running yet; 503:
// one sampling failed), after which polling goes on.
export function usageNeverComes(err: unknown): boolean {
  const status = (err as { status?: unknown } | null)?.status;
  return status === 404 || status === 422 || status === 501;
}
