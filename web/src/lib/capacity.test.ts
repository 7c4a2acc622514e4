import { describe, expect, it } from 'vitest';
import { capacityNote, carryServerView, free, hostUse, level, percent, ratio, type HostLike } from './capacity';

const host = (cpus: number, vcpus: number, cap?: number, mem = 8192, memUsed = 1024, memCap?: number): HostLike => ({
  name: 'h',
  status: {
    cpus,
    memoryMiB: mem,
    allocated: { vcpus, memoryMiB: memUsed, vms: 1 },
    capacity: cap === undefined ? undefined : { vcpus: cap, memoryMiB: memCap ?? mem - 256 },
  },
});

describe('hostUse', () => {
  it('reads 8 vCPUs on 4 CPUs under a 4x overcommit as half full, not 200 % hot', () => {
    const u = hostUse(host(4, 8, 16)).vcpus;
    expect(u).toMatchObject({ used: 8, capacity: 16, physical: 4, percent: 50, level: 'ok', known: true });
    expect(ratio(u)).toBe('4×');
  });
  it('colours by what the scheduler offers', () => {
    expect(hostUse(host(4, 13, 16)).vcpus.level).toBe('warm');
    expect(hostUse(host(4, 15, 16)).vcpus.level).toBe('hot');
    expect(hostUse(host(4, 16, 16)).vcpus.percent).toBe(100);
  });
  it('measures memory against the schedulable memory', () => {
    const m = hostUse(host(4, 1, 16, 8192, 7936, 7936)).memory;
    expect(m).toMatchObject({ capacity: 7936, physical: 8192, percent: 100, level: 'hot' });
    expect(ratio(m)).toBe('0.97×');
  });
  it('falls back to the physical amount, saying so, when the server tells no capacity', () => {
    const u = hostUse(host(4, 2)).vcpus;
    expect(u).toMatchObject({ capacity: 4, percent: 50, known: false });
    expect(ratio(u)).toBe('');
  });
  it('shows an allocation past the capacity as hot, and nothing allocated as 0 %', () => {
    expect(hostUse(host(4, 20, 16)).vcpus).toMatchObject({ percent: 125, level: 'hot' });
    expect(hostUse(host(4, 0, 16)).vcpus).toMatchObject({ percent: 0, level: 'ok' });
    expect(percent(3, 0)).toBe(Infinity);
    expect(level(percent(0, 0))).toBe('ok');
  });
});

describe('carryServerView', () => {
  it("keeps the allocation and capacity the server added when an event's host lacks them", () => {
    const shown = host(4, 8, 16);
    const ev: HostLike = { name: 'h', version: 9, status: { cpus: 4, memoryMiB: 8192, allocated: { vcpus: 0, memoryMiB: 0, vms: 0 } } };
    const got = carryServerView(shown, ev);
    expect(got.version).toBe(9);
    expect(got.status.allocated).toEqual(shown.status.allocated);
    expect(got.status.capacity).toEqual(shown.status.capacity);
  });
  it('drops a capacity that no longer fits a host whose CPUs changed', () => {
    const ev: HostLike = { name: 'h', status: { cpus: 8, memoryMiB: 8192 } };
    expect(carryServerView(host(4, 8, 16), ev).status.capacity).toBeUndefined();
  });
  it('takes a new host as it is', () => {
    const ev = host(2, 0, 8);
    expect(carryServerView(undefined, ev)).toBe(ev);
  });
});

describe('capacityNote', () => {
  it('tells the overcommit, or what is kept for the host', () => {
    expect(capacityNote(hostUse(host(4, 8, 16)).vcpus)).toBe('4 physical × 4 overcommit');
    expect(capacityNote(hostUse(host(4, 1, 16, 8192, 0, 7936)).memory, (n) => `${n} MiB`)).toBe('8192 MiB physical, less 256 MiB kept for the host');
    expect(capacityNote(hostUse(host(4, 1, 4)).vcpus)).toBe('4 physical');
    expect(capacityNote(hostUse(host(4, 1)).vcpus)).toBe('of 4 physical (the server does not tell what it offers)');
  });
});

describe('free', () => {
  it('is the room the scheduler still offers, not the physical CPUs left', () => {
    expect(free(hostUse(host(4, 8, 16)).vcpus)).toBe(8);
    expect(free(hostUse(host(4, 20, 16)).vcpus)).toBe(0);
  });
});
