import { describe, expect, it } from 'vitest';
import { paths, sumHistories, type UsageHistory } from './usagehistory';

describe('paths', () => {
  it('breaks the line where points are missing', () => {
    const step = 300_000;
    const pts = [0, 1, 2, 5, 6].map((i) => ({ t: i * step, v: i }));
    const got = paths(pts, 0, 10 * step, step, 10, 100, 10);
    expect(got).toEqual(['0.0,10.0 10.0,9.0 20.0,8.0', '50.0,5.0 60.0,4.0']);
  });
  it('draws a lone point and clamps to the top', () => {
    expect(paths([{ t: 5, v: 50 }], 0, 10, 1, 10, 100, 10)).toEqual(['50.0,0.0 52.0,0.0']);
    expect(paths([], 0, 10, 1, 10, 100, 10)).toEqual([]);
  });
});

describe('sumHistories', () => {
  it('adds points at the same times and the capacities', () => {
    const h = (name: string, cpus: number, pts: [string, number][]): UsageHistory => ({
      kind: 'host', name, since: 'a', until: 'b', stepSeconds: 300, cpus, memoryMiB: 1024,
      points: pts.map(([time, cpu]) => ({ time, cpu, cpuMax: cpu, memoryBytes: 1, memoryMaxBytes: 1, samples: 5 })),
    });
    const s = sumHistories('c', [h('h1', 8, [['2026-12-01T00:05:00Z', 1], ['2026-12-01T00:00:00Z', 2]]), h('h2', 4, [['2026-12-01T00:05:00Z', 3]])])!;
    expect(s.points.map((p) => [p.time, p.cpu, p.samples])).toEqual([
      ['2026-12-01T00:00:00Z', 2, 5],
      ['2026-12-01T00:05:00Z', 4, 10],
    ]);
    expect([s.cpus, s.memoryMiB]).toEqual([12, 2048]);
    expect(sumHistories('none', [])).toBeUndefined();
  });
});
