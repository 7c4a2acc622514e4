import { describe, expect, it } from 'vitest';
import { fate, planHeadline, planUse, runsOut } from './plan';
import type { ClusterForecast, Plan, PlanHost } from '../types';

const host = (over: Partial<PlanHost>): PlanHost => ({
  name: 'h1',
  capacity: { cpu: 8, memoryMiB: 8192 },
  before: { cpu: 0, memoryMiB: 0 },
  after: { cpu: 0, memoryMiB: 0 },
  vmsBefore: 0,
  vmsAfter: 0,
  ...over,
});

describe('plan', () => {
  it('reads demand against the plan capacity', () => {
    expect(planUse(6, 8)).toMatchObject({ percent: 75, capacity: 8, used: 6 });
    expect(planUse(0, 0).percent).toBe(0);
    expect(planUse(1, 0).percent).toBe(Infinity);
  });
  it('tells what becomes of each host', () => {
    expect(fate(host({ vmsBefore: 2, vmsAfter: 3 }))).toBe('keep');
    expect(fate(host({ vmsBefore: 2 }))).toBe('free');
    expect(fate(host({}))).toBe('idle');
    expect(fate(host({ cordoned: true, vmsBefore: 1 }))).toBe('cordoned');
  });
  it('sums a plan up', () => {
    const p: Plan = {
      options: {},
      hostsBefore: 3,
      hostsAfter: 1,
      lowerBound: 1,
      hosts: [],
      moves: [{ vm: 'a', from: 'h2', to: 'h1' }],
      unplaced: [{ vm: 'big', reason: 'larger than any host' }],
      savings: { hosts: 2, cpus: 16, memoryMiB: 1024 },
    };
    expect(planHeadline(p)).toBe('3 hosts now, 1 in the plan (no plan can use fewer than 1); 1 VM move, 2 hosts left empty; 1 VM has no host');
  });
  it('says when a cluster runs out', () => {
    const trend = { capacity: 20, now: 13, perDay: 1, points: 8 };
    const c: ClusterForecast = { cluster: 'a', hosts: 2, vms: 2, cpu: { ...trend, daysLeft: 7, runsOutAt: '2026-11-15T00:00:00Z' }, memory: { ...trend, note: 'not growing' }, runsOut: 'cpu', runsOutAt: '2026-11-15T00:00:00Z' };
    expect(runsOut(c)).toBe('cpu on 2026-11-15, in 7 days');
    expect(runsOut({ ...c, runsOut: undefined, runsOutAt: undefined, cpu: { ...trend, note: 'no history' } })).toBe('not at this trend (no history)');
  });
});
