import { describe, expect, it } from 'vitest';
import { cpuPercent, sparkPoints } from './stats';

describe('usage series', () => {
  const s = (t: number, cpu: number) => ({ time: new Date(t * 1000).toISOString(), cpuSeconds: cpu, memoryBytes: 1, vcpus: 2 });
  it('computes CPU percent of the vCPUs between samples', () => {
    expect(cpuPercent([s(0, 10), s(2, 11), s(4, 15), s(6, 14)])).toEqual([25, 100]);
    expect(cpuPercent([s(0, 1)])).toEqual([]);
  });
  it('draws points in the box, highest at the top', () => {
    expect(sparkPoints([0, 50, 100], 100, 10)).toBe('0.0,10.0 50.0,5.0 100.0,0.0');
    expect(sparkPoints([], 100, 10)).toBe('');
    expect(sparkPoints([0.5], 100, 10, 1)).toBe('0.0,5.0');
  });
});
