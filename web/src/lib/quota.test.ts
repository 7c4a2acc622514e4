import { describe, expect, it } from 'vitest';
import { quotaBody, quotaForm, quotaRows } from './quota';

describe('quotaRows', () => {
  it('puts each limit beside its usage, unlimited where none is set', () => {
    const rows = quotaRows({ project: 'p', limits: { vcpus: 8, vms: 2 }, usage: { vcpus: 1, memoryMiB: 256, diskMiB: 0, vms: 1 } });
    expect(rows.map((r) => [r.key, r.used, r.limit])).toEqual([
      ['vcpus', 1, 8],
      ['memoryMiB', 256, undefined],
      ['diskMiB', 0, undefined],
      ['vms', 1, 2],
    ]);
    expect(rows[1]).toMatchObject({ label: 'Memory', unit: 'MiB' });
  });
  it('shows limits the server adds later, named from their keys', () => {
    const rows = quotaRows({ project: 'p', limits: { imageStorageMiB: 1024 }, usage: { vcpus: 0, imageStorageMiB: 10, gpuCount: 1 } });
    expect(rows.find((r) => r.key === 'imageStorageMiB')).toMatchObject({ label: 'Image storage', unit: 'MiB', used: 10, limit: 1024 });
    expect(rows.find((r) => r.key === 'gpuCount')).toMatchObject({ label: 'Gpu count', unit: 'count', used: 1 });
  });
});

describe('quotaBody', () => {
  it('sends numbers, leaves blanks out (no limit)', () => {
    const f = quotaForm(quotaRows({ project: 'p', limits: { vcpus: 8 }, usage: { vcpus: 1, vms: 0 } }));
    expect(f.vcpus).toBe('8');
    expect(f.vms).toBe('');
    expect(quotaBody({ ...f, vms: ' 3 ' })).toEqual({ body: { vcpus: 8, vms: 3 } });
    expect(quotaBody({ vcpus: '0' })).toEqual({ body: { vcpus: 0 } });
  });
  it('sends a negative number for the API to refuse, refuses what is no number', () => {
    expect(quotaBody({ vcpus: '-1' })).toEqual({ body: { vcpus: -1 } });
    expect(quotaBody({ vcpus: 'lots' })).toEqual({ field: 'quota.vcpus', message: 'must be a whole number, or blank for no limit, not "lots"' });
    expect(quotaBody({ memoryMiB: '1.5' })).toMatchObject({ field: 'quota.memoryMiB' });
  });
});

describe('network limits', () => {
  it('are named as the console names them, after the VM limits', () => {
    const rows = quotaRows({ project: 'p', limits: { ports: 10 }, usage: { vcpus: 0, networks: 1, ports: 3, floatingIPs: 0 } });
    expect(rows.slice(4).map((r) => [r.label, r.used, r.limit])).toEqual([
      ['Networks', 1, undefined],
      ['Ports', 3, 10],
      ['Floating IPs', 0, undefined],
    ]);
  });
});
