import { describe, expect, it } from 'vitest';
import { cancellable, filterOps, isDone, newestFirst, targetLink, type Op } from './ops';

const op = (id: string, status: string, kind = 'vm.start', createdAt = `2026-01-01T00:00:0${id}Z`, name = 'web'): Op => ({
  id,
  kind,
  status,
  progress: 0,
  createdAt,
  target: { kind: 'vm', name, project: 'p' },
});

describe('operations', () => {
  it('knows which are over and which may be cancelled', () => {
    expect(['pending', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => isDone({ status: s }))).toEqual([false, false, true, true, true]);
    expect(cancellable({ status: 'pending' })).toBe(true);
    expect(cancellable({ status: 'running' })).toBe(false);
    expect(cancellable({ status: 'running', kind: 'vm.start' })).toBe(false);
    expect(cancellable({ status: 'running', kind: 'vm.migrate' })).toBe(true);
    expect(cancellable({ status: 'succeeded', kind: 'vm.migrate' })).toBe(false);
  });
  it('lists the newest first', () => {
    expect(newestFirst([op('1', 'pending'), op('3', 'failed'), op('2', 'running')]).map((o) => o.id)).toEqual(['3', '2', '1']);
  });
  it('filters by status, kind (or a kind prefix) and text', () => {
    const ops = [op('1', 'pending', 'vm.create'), op('2', 'failed', 'image.import', undefined, 'disk'), op('3', 'pending', 'vm.stop')];
    expect(filterOps(ops, { status: 'pending', kind: '', q: '' }).map((o) => o.id)).toEqual(['3', '1']);
    expect(filterOps(ops, { status: '', kind: 'vm.', q: '' }).map((o) => o.id)).toEqual(['3', '1']);
    expect(filterOps(ops, { status: '', kind: 'image.import', q: '' }).map((o) => o.id)).toEqual(['2']);
    expect(filterOps(ops, { status: '', kind: '', q: 'DISK' }).map((o) => o.id)).toEqual(['2']);
  });
  it('links VM operations to the VM page', () => {
    expect(targetLink(op('1', 'pending'))).toBe('/vms/p/web');
    expect(targetLink({ ...op('1', 'pending'), target: { kind: 'image', name: 'x', project: 'p' } })).toBeUndefined();
  });
});
