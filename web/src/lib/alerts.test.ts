import { describe, expect, it } from 'vitest';
import { alerts, countBy } from './alerts';

describe('dashboard alerts', () => {
  const now = Date.parse('2026-01-01T12:00:00Z');
  it('flags disconnected providers, hosts not ready and failures of the last hour', () => {
    const got = alerts(
      {
        providers: [
          { name: 'vc', status: { state: 'disconnected', message: 'timeout' } },
          { name: 'kvm', status: { state: 'connected' } },
        ],
        hosts: [
          { name: 'h1', status: { state: 'ready' } },
          { name: 'h2', status: { state: 'notready' } },
        ],
        ops: [
          { id: 'o1', kind: 'vm.start', status: 'failed', createdAt: '2026-01-01T11:30:00Z', target: { name: 'web', project: 'p' }, error: { message: 'no room' } },
          { id: 'o2', kind: 'vm.start', status: 'failed', createdAt: '2026-01-01T09:00:00Z', target: { name: 'old', project: 'p' } },
          { id: 'o3', kind: 'vm.stop', status: 'succeeded', createdAt: '2026-01-01T11:59:00Z', target: { name: 'web', project: 'p' } },
          { id: 'o4', kind: 'vm.create', status: 'failed', createdAt: '2026-01-01T10:00:00Z', finishedAt: '2026-01-01T11:10:00Z', target: { name: 'slow' } },
        ],
      },
      now,
    );
    expect(got.map((a) => a.text)).toEqual([
      'Provider vc is disconnected: timeout',
      'Host h2 is notready',
      'vm.start of p/web failed: no room',
      'vm.create of slow failed',
    ]);
  });
  it('is quiet when all is well', () => {
    expect(alerts({ providers: [], hosts: [{ name: 'h', status: { state: 'ready' } }], ops: [] }, now)).toEqual([]);
  });
});

describe('countBy', () => {
  it('counts by key, sorted', () => {
    expect(countBy(['running', 'stopped', 'running'], (s) => s)).toEqual([
      ['running', 2],
      ['stopped', 1],
    ]);
  });
});
