import { describe, expect, it } from 'vitest';
import { APIError } from './errors';
import { cpuPercent, sparkPoints, usageNeverComes } from './stats';

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

describe('a refused sample', () => {
  const refused = (status: number) => new APIError(status, { code: 'x', message: 'm' });
  it('stops the polling only when no sample will ever come', () => {
    expect(usageNeverComes(refused(422))).toBe(true);
    expect(usageNeverComes(refused(404))).toBe(true);
    expect(usageNeverComes(refused(501))).toBe(true);
  });
  it('keeps polling a VM whose host does not report it running yet, and after a failed sample', () => {
    expect(usageNeverComes(refused(409))).toBe(false);
    expect(usageNeverComes(refused(503))).toBe(false);
    expect(usageNeverComes(new Error('network down'))).toBe(false);
    expect(usageNeverComes(undefined)).toBe(false);
  });
});
