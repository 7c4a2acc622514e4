import { describe, expect, it } from 'vitest';
import { counts, countsText, eta, filterMigrations, mayCancel, mayDelete, migrationPath, percent, phaseText, rate, silentFor, stateText, vmRows, type MigrationLike } from './v2v';

const mig = (name: string, state: string, extra: Partial<MigrationLike['spec']> = {}, vms: MigrationLike['status']['vms'] = undefined, createdAt = '2026-12-06T08:00:00Z'): MigrationLike => ({
  name,
  project: 'shop',
  createdAt,
  spec: { source: 'ova', host: 'node1', parallel: 2, vms: [{ name: 'web', sourceName: 'Web 01' }, { name: 'db', sourceName: 'db' }], ...extra },
  status: { state, vms },
});

describe('what may be done to a migration', () => {
  it('cancels one not over whose cancel was not asked', () => {
    expect(mayCancel(mig('a', 'pending'))).toBe(true);
    expect(mayCancel(mig('a', 'running'))).toBe(true);
    expect(mayCancel(mig('a', 'running', { cancel: true }))).toBe(false);
    for (const s of ['succeeded', 'failed', 'cancelled']) expect(mayCancel(mig('a', s))).toBe(false);
  });
  it('deletes one not running, or running with its cancel asked, as the API does', () => {
    expect(mayDelete(mig('a', 'running'))).toBe(false);
    expect(mayDelete(mig('a', 'running', { cancel: true }))).toBe(true);
    for (const s of ['pending', 'succeeded', 'failed', 'cancelled']) expect(mayDelete(mig('a', s))).toBe(true);
  });
  it('says cancelling while the runner has not stopped yet', () => {
    expect(stateText(mig('a', 'running', { cancel: true }))).toBe('cancelling');
    expect(stateText(mig('a', 'cancelled', { cancel: true }))).toBe('cancelled');
    expect(stateText(mig('a', ''))).toBe('pending');
  });
});

describe('a runner that stopped reporting', () => {
  const now = Date.parse('2026-12-06T08:10:00Z');
  it('is said after 30 seconds of silence, only while running', () => {
    const m = mig('a', 'running');
    m.status.reportedAt = '2026-12-06T08:09:50Z';
    expect(silentFor(m, now)).toBe(0);
    m.status.reportedAt = '2026-12-06T08:09:00Z';
    expect(silentFor(m, now)).toBe(60);
    m.status.state = 'succeeded';
    expect(silentFor(m, now)).toBe(0);
  });
  it('ignores a missing or unreadable time', () => {
    const m = mig('a', 'running');
    expect(silentFor(m, now)).toBe(0);
    m.status.reportedAt = 'yesterday';
    expect(silentFor(m, now)).toBe(0);
  });
});

describe("each VM's progress", () => {
  it('pairs the spec with the status by name, a VM not reported being pending', () => {
    const rows = vmRows(mig('a', 'running', {}, [{ name: 'db', state: 'running', phase: 'stream' }]));
    expect(rows.map((r) => [r.vm.name, r.st.state])).toEqual([
      ['web', 'pending'],
      ['db', 'running'],
    ]);
    expect(vmRows(mig('a', 'pending', { vms: null }))).toEqual([]);
  });
  it('counts the VMs by state', () => {
    const m = mig('a', 'running', { vms: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }] }, [
      { name: 'a', state: 'succeeded' },
      { name: 'b', state: 'failed', error: 'x' },
      { name: 'c', state: 'running' },
    ]);
    const c = counts(m);
    expect(c).toEqual({ total: 4, succeeded: 1, failed: 1, running: 1, pending: 1, cancelled: 0 });
    expect(countsText(c)).toBe('1 of 4 VMs moved, 1 copying, 1 failed');
    expect(countsText(counts(mig('a', 'pending', { vms: [{ name: 'a' }] })))).toBe('0 of 1 VM moved');
  });
  it('tells the phase, bytes, rate, time left and where a resumed copy started', () => {
    expect(phaseText({ name: 'a', state: 'running', phase: 'stream', disk: 'disk0', doneBytes: 3 * 2 ** 30, totalBytes: 4 * 2 ** 30, rate: 80 * 2 ** 20, etaSeconds: 12.8, resumedBytes: 2 ** 30 })).toBe(
      'stream disk0 · 3.0 GiB of 4.0 GiB · 80 MiB/s · 13 s left · resumed at 1.0 GiB',
    );
    expect(phaseText({ name: 'a', state: 'running', phase: 'create' })).toBe('create');
    expect(phaseText({ name: 'a', state: 'running' })).toBe('starting');
    expect(phaseText({ name: 'a', state: 'pending' })).toBe('waiting');
    expect(phaseText({ name: 'a', state: 'succeeded', phase: 'done' })).toBe('done');
    expect(phaseText({ name: 'a', state: 'failed', error: 'disk 0: backing file refused' })).toBe('failed: disk 0: backing file refused');
  });
  it('never shows more done than the total', () => {
    expect(phaseText({ name: 'a', state: 'running', phase: 'convert', doneBytes: 5 * 2 ** 20, totalBytes: 2 ** 20 })).toBe('convert · 1 MiB of 1 MiB');
    expect(percent({ doneBytes: 5, totalBytes: 4 })).toBe(100);
    expect(percent({ doneBytes: 1, totalBytes: 4 })).toBe(25);
    expect(percent({ doneBytes: -1, totalBytes: 4 })).toBe(0);
    expect(percent({ doneBytes: 1 })).toBeUndefined();
  });
  it('shows rates and times as people read them', () => {
    expect(rate(512)).toBe('512 B/s');
    expect(rate(1536)).toBe('1.5 KiB/s');
    expect(rate(27 * 2 ** 20)).toBe('27 MiB/s');
    expect(rate(0)).toBe('');
    expect(rate(NaN)).toBe('');
    expect(eta(40)).toBe('40 s');
    expect(eta(200)).toBe('3 min 20 s');
    expect(eta(120)).toBe('2 min');
    expect(eta(3900)).toBe('1 h 5 min');
    expect(eta(7200)).toBe('2 h');
    expect(eta(5 * 86400)).toBe('5 days');
    expect(eta(0)).toBe('');
    expect(eta(Infinity)).toBe('');
  });
});

describe('the list', () => {
  it('filters by state (cancelling too) and by name, source or host, newest first', () => {
    const l = [mig('old', 'succeeded', {}, undefined, '2026-12-01T00:00:00Z'), mig('new', 'running', { cancel: true }), mig('lv', 'failed', { source: 'libvirt qemu:///system' }, undefined, '2026-12-02T00:00:00Z')];
    expect(filterMigrations(l, '', '').map((m) => m.name)).toEqual(['new', 'lv', 'old']);
    expect(filterMigrations(l, 'cancelling', '').map((m) => m.name)).toEqual(['new']);
    expect(filterMigrations(l, 'running', '').map((m) => m.name)).toEqual(['new']);
    expect(filterMigrations(l, '', 'LIBVIRT').map((m) => m.name)).toEqual(['lv']);
    expect(filterMigrations(l, '', 'node1').length).toBe(3);
  });
  it('links a migration by its project and escaped name', () => {
    expect(migrationPath({ name: 'w 1', project: 'a/b' })).toBe('/migrations/a%2Fb/w%201');
  });
});
