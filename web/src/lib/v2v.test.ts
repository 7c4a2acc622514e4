import { describe, expect, it } from 'vitest';
import {
  checkChoices,
  counts,
  countsText,
  createBody,
  defaultNetworkMap,
  emptyChoices,
  eta,
  filterMigrations,
  mayCancel,
  mayStart,
  migrationName,
  migrationPath,
  percent,
  phaseText,
  rate,
  silentFor,
  sourceNetworks,
  sourceText,
  stateText,
  summarizePlan,
  summaryText,
  waveSeconds,
  type ImportChoices,
  type MigrationLike,
  type PlannedVM,
  type VMPlan,
} from './v2v';

const mig = (name: string, state: string, extra: Partial<MigrationLike['spec']> = {}, vms: MigrationLike['status']['vms'] = undefined, createdAt = '2026-12-06T08:00:00Z'): MigrationLike => ({
  name,
  project: 'shop',
  createdAt,
  spec: { source: { kind: 'url', url: 'https://example.com/web.ova' }, host: 'node1', parallel: 2, ...extra },
  status: { state, vms },
});

const plan = (p: Partial<VMPlan> = {}): VMPlan => ({ vcpus: 1, memoryMiB: 512, copyBytes: 2 ** 30, estimatedSeconds: 60, ...p });

describe('what may be done to a migration', () => {
  it('cancels one not over whose cancel was not asked', () => {
    for (const s of ['uploading', 'planning', 'planned', 'pending', 'running']) expect(mayCancel(mig('a', s))).toBe(true);
    expect(mayCancel(mig('a', 'running', { cancel: true }))).toBe(false);
    for (const s of ['succeeded', 'failed', 'cancelled']) expect(mayCancel(mig('a', s))).toBe(false);
  });
  it('starts a planned one once', () => {
    expect(mayStart(mig('a', 'planned'))).toBe(true);
    expect(mayStart(mig('a', 'planned', { start: true }))).toBe(false);
    expect(mayStart(mig('a', 'planned', { cancel: true }))).toBe(false);
    for (const s of ['uploading', 'planning', 'running', 'failed']) expect(mayStart(mig('a', s))).toBe(false);
  });
  it('says cancelling while the run has not stopped yet, and pending once started', () => {
    expect(stateText(mig('a', 'running', { cancel: true }))).toBe('cancelling');
    expect(stateText(mig('a', 'cancelled', { cancel: true }))).toBe('cancelled');
    expect(stateText(mig('a', 'planned', { start: true }))).toBe('pending');
    expect(stateText(mig('a', ''))).toBe('pending');
  });
  it('says where the VMs come from', () => {
    expect(sourceText({ kind: 'provider', provider: 'vc1' })).toBe('provider vc1');
    expect(sourceText({ kind: 'url', url: 'https://x/a.ova' })).toBe('OVA at https://x/a.ova');
    expect(sourceText({ kind: 'upload', format: 'disk', files: [{ name: 'a.vhdx' }, { name: 'b.vhdx' }] })).toBe('disk files uploaded: a.vhdx, b.vhdx');
    expect(sourceText({ kind: 'upload', format: 'ova' })).toBe('OVA uploaded');
  });
});

describe('a run that stopped writing progress', () => {
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
  it('counts the VMs by state, a blocked one apart', () => {
    const m = mig('a', 'running', {}, [
      { name: 'a', state: 'succeeded' },
      { name: 'b', state: 'failed', error: 'x' },
      { name: 'c', state: 'running' },
      { name: 'd', state: 'pending' },
      { name: 'e', state: 'pending', plan: plan({ blockers: ['firmware efi'] }) },
    ]);
    const c = counts(m);
    expect(c).toEqual({ total: 5, blocked: 1, succeeded: 1, failed: 1, running: 1, pending: 1, cancelled: 0 });
    expect(countsText(c)).toBe('1 of 5 VMs moved, 1 copying, 1 failed, 1 cannot move');
    expect(countsText(counts(mig('a', 'planned', {}, [{ name: 'a', state: 'pending' }])))).toBe('0 of 1 VM moved');
    expect(counts(mig('a', 'planning')).total).toBe(0);
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
    expect(eta(0.3)).toBe('under a second');
    expect(eta(0)).toBe('');
    expect(eta(Infinity)).toBe('');
  });
});

describe('the list', () => {
  it('filters by state (cancelling too) and by name, source or host, newest first', () => {
    const l = [
      mig('old', 'succeeded', {}, undefined, '2026-12-01T00:00:00Z'),
      mig('new', 'running', { cancel: true }),
      mig('lv', 'failed', { source: { kind: 'provider', provider: 'libvirt-lab' }, host: '' }, undefined, '2026-12-02T00:00:00Z'),
    ];
    expect(filterMigrations(l, '', '').map((m) => m.name)).toEqual(['new', 'lv', 'old']);
    expect(filterMigrations(l, 'cancelling', '').map((m) => m.name)).toEqual(['new']);
    expect(filterMigrations(l, 'running', '').map((m) => m.name)).toEqual(['new']);
    expect(filterMigrations(l, '', 'LIBVIRT').map((m) => m.name)).toEqual(['lv']);
    expect(filterMigrations(l, '', 'node1').length).toBe(2);
  });
  it('links a migration by its project and escaped name', () => {
    expect(migrationPath({ name: 'w 1', project: 'a/b' })).toBe('/migrations/a%2Fb/w%201');
  });
});

const ok: ImportChoices = { ...emptyChoices, name: 'wave1', kind: 'provider', provider: 'vc1', vms: ['vm-42', 'vm-43'] };

describe("the wizard's choices", () => {
  it('proposes a name from the time', () => {
    expect(migrationName(new Date('2026-12-06T08:05:09Z'))).toBe('import-20261206-0805');
  });
  it('finds nothing wrong with a complete choice of each source', () => {
    expect(checkChoices(ok)).toEqual([]);
    expect(checkChoices({ ...ok, kind: 'url', url: 'https://mirror.example.com/web.ova' })).toEqual([]);
    expect(checkChoices({ ...ok, kind: 'upload', format: 'ova', files: [{ name: 'web.ova', size: 10 }] })).toEqual([]);
    expect(checkChoices({ ...ok, kind: 'upload', format: 'disk', files: [{ name: 'a.vhdx', size: 10 }, { name: 'b.vhdx', size: 5 }] })).toEqual([]);
  });
  it('names the field of each problem, as the API would', () => {
    const fields = (c: ImportChoices) => checkChoices(c).map((p) => p.field);
    expect(fields({ ...ok, name: ' ' })).toEqual(['name']);
    expect(fields({ ...ok, provider: '' })).toEqual(['source.provider']);
    expect(fields({ ...ok, vms: [] })).toEqual(['source.vms']);
    expect(fields({ ...ok, kind: 'url', url: 'ftp://x/a.ova' })).toEqual(['source.url']);
    expect(fields({ ...ok, kind: 'url', url: 'not a url' })).toEqual(['source.url']);
    expect(checkChoices({ ...ok, kind: 'url', url: 'https://u:secret@x/a.ova' })[0].message).toMatch(/password/);
    expect(fields({ ...ok, kind: 'upload', files: [] })).toEqual(['source.files']);
    expect(fields({ ...ok, kind: 'upload', format: 'ova', files: [{ name: 'a.ova', size: 1 }, { name: 'b.ova', size: 1 }] })).toEqual(['source.files']);
    expect(fields({ ...ok, kind: 'upload', format: 'disk', files: [{ name: 'a', size: 1 }, { name: 'a', size: 1 }] })).toEqual(['source.files']);
    expect(fields({ ...ok, kind: 'upload', format: 'disk', files: [{ name: 'a', size: 0 }] })).toEqual(['source.files']);
    expect(fields({ ...ok, kind: 'upload', format: 'disk', files: [{ name: 'a', size: 1 }], vcpus: '0', memory: '1.5' })).toEqual(['source.hardware.vcpus', 'source.hardware.memoryMiB']);
    expect(fields({ ...ok, kind: 'upload', format: 'disk', files: [{ name: 'a', size: 1 }], macs: '00:15:5d:01:02:03, 00:15:5d:01:02' })).toEqual(['source.hardware.macs']);
    expect(checkChoices({ ...ok, kind: 'upload', format: 'disk', files: [{ name: 'a', size: 1 }], macs: '00:15:5d:01:02:03, 00:15:5d:01:02' })[0].message).toMatch(/^00:15:5d:01:02 is not a MAC/);
    expect(fields({ ...ok, parallel: '0' })).toEqual(['parallel']);
    expect(fields({ ...ok, parallel: '33' })).toEqual(['parallel']);
    expect(fields({ ...ok, parallel: 'two' })).toEqual(['parallel']);
    expect(fields({ ...ok, networkMap: { '*': 'user', 'VM Network': '' } })).toEqual(['networkMap']);
    expect(fields({ ...ok, kind: 'url', url: 'https://x/a.ova', disposition: 'delete' })).toEqual(['sourceDisposition']);
  });
  it("makes the create body of a provider's VMs, planned and not started", () => {
    expect(createBody({ ...ok, name: ' wave1 ', host: 'node1', parallel: '4', disposition: 'poweroff', networkMap: { '*': 'user', 'VM Network': 'lan', unused: '' } })).toEqual({
      name: 'wave1',
      source: { kind: 'provider', provider: 'vc1', vms: [{ id: 'vm-42' }, { id: 'vm-43' }] },
      host: 'node1',
      parallel: 4,
      networkMap: { '*': 'user', 'VM Network': 'lan' },
      sourceDisposition: 'poweroff',
    });
  });
  it('leaves the host to the scheduler, and the source as it is, unless chosen', () => {
    const b = createBody(ok);
    expect(b.host).toBeUndefined();
    expect(b.sourceDisposition).toBeUndefined();
    expect(b.start).toBeUndefined();
  });
  it('makes the body of an uploaded OVA, disk files with their hardware, and a URL', () => {
    expect(createBody({ ...ok, kind: 'upload', format: 'ova', files: [{ name: 'web.ova', size: 123 }], disposition: 'delete' })).toEqual({
      name: 'wave1',
      source: { kind: 'upload', format: 'ova', files: [{ name: 'web.ova', sizeBytes: 123 }] },
      parallel: 2,
      networkMap: { '*': 'user' },
    });
    expect(createBody({ ...ok, kind: 'upload', format: 'disk', files: [{ name: 'web.vhdx', size: 9 }], hwName: ' web ', vcpus: '2', memory: '2048', firmware: 'bios', macs: ' 00:15:5d:01:02:03,00:15:5d:01:02:04 ' }).source).toEqual({
      kind: 'upload',
      format: 'disk',
      files: [{ name: 'web.vhdx', sizeBytes: 9 }],
      hardware: { name: 'web', vcpus: 2, memoryMiB: 2048, firmware: 'bios', macs: ['00:15:5d:01:02:03', '00:15:5d:01:02:04'] },
    });
    expect(createBody({ ...ok, kind: 'url', url: ' https://x/web.ova ' }).source).toEqual({ kind: 'url', url: 'https://x/web.ova' });
  });
});

describe('network mapping', () => {
  it("lists the networks of the chosen VMs' NICs once, in order", () => {
    expect(sourceNetworks([{ spec: { nics: [{ network: 'VM Network' }, { network: 'dmz' }] } }, { spec: { nics: [{ network: 'dmz' }, { network: '' }] } }, { spec: {} }])).toEqual(['dmz', 'VM Network']);
  });
  it("maps onto the project's network of the same name, else as every other network", () => {
    expect(defaultNetworkMap(['lan', 'DMZ', 'storage'], ['lan', 'dmz'], {})).toEqual({ '*': 'user', lan: 'lan', DMZ: 'dmz', storage: 'user' });
    expect(defaultNetworkMap(['storage'], [], { '*': 'lan' })).toEqual({ '*': 'lan', storage: 'lan' });
  });
  it('keeps what was chosen and drops networks no longer chosen', () => {
    expect(defaultNetworkMap(['lan'], ['lan'], { '*': 'user', lan: 'user', gone: 'lan' })).toEqual({ '*': 'user', lan: 'user' });
  });
});

describe('the plan', () => {
  it('takes as long as its slowest wave slot', () => {
    expect(waveSeconds([60, 60, 60, 60], 2)).toBe(120);
    expect(waveSeconds([100, 10, 10, 10], 2)).toBe(100);
    expect(waveSeconds([30, 20, 10], 1)).toBe(60);
    expect(waveSeconds([30, 20, 10], 8)).toBe(30);
    expect(waveSeconds([], 2)).toBe(0);
    expect(waveSeconds([NaN, -5, 10], 0)).toBe(10);
  });
  it('sums what moves, and sets apart what cannot, with its networks', () => {
    const vms: PlannedVM[] = [
      { name: 'web', plan: plan({ copyBytes: 2 * 2 ** 30, estimatedSeconds: 120, nics: [{ sourceNetwork: 'VM Network', network: 'lan', model: 'virtio' }] }) },
      { name: 'db', plan: plan({ copyBytes: 2 ** 30, estimatedSeconds: 60, warnings: ['runs: copied as after a crash'], nics: [{ sourceNetwork: 'dmz', network: 'user', model: 'virtio' }] }) },
      { name: 'win', plan: plan({ copyBytes: 8 * 2 ** 30, estimatedSeconds: 900, blockers: ['a Windows guest needs virtio-win drivers'] }) },
    ];
    const s = summarizePlan(vms, 1);
    expect(s).toEqual({
      total: 3,
      runnable: 2,
      blocked: 1,
      warned: 1,
      copyBytes: 3 * 2 ** 30,
      seconds: 180,
      networks: [
        ['dmz', 'user'],
        ['VM Network', 'lan'],
      ],
    });
    expect(summaryText(s)).toBe('2 of 3 VMs can move; 1 cannot (below, with why): 3.0 GiB to copy, about 3 min.');
    expect(summarizePlan(vms, 2).seconds).toBe(120);
  });
  it('says when nothing can move', () => {
    const s = summarizePlan([{ name: 'win', plan: plan({ blockers: ['no'] }) }], 2);
    expect(s.runnable).toBe(0);
    expect(summaryText(s)).toBe('0 of 1 VM can move; 1 cannot (below, with why).');
    expect(summaryText(summarizePlan([], 2))).toBe('The plan holds no VM.');
  });
});
