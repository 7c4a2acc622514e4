import { describe, expect, it } from 'vitest';
import { LineSplitter } from './ndjson';
import { APIError, fieldId, formField } from './errors';
import { visibleWindow } from './vwindow';
import { allows } from './roles';
import { leaseText, span } from './lease';
import { wsProtocols, wsURL } from './wsproto';
import { emptyQuery, filterVMs, inventory, type VMRow } from './vmfilter';
import { fromSearch, toSearch } from './urlstate';

describe('LineSplitter', () => {
  it('joins lines split across chunks and drops blank ones', () => {
    const s = new LineSplitter();
    expect(s.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(s.push(':2}\n\n{"c":3')).toEqual(['{"b":2}']);
    expect(s.push('}\n')).toEqual(['{"c":3}']);
    expect(s.push('')).toEqual([]);
  });
});

describe('errors', () => {
  it('maps API field paths to inline error ids', () => {
    expect(fieldId('disks[0].image')).toBe('disks-0-image');
    expect(fieldId('boot.kernel')).toBe('boot-kernel');
    expect(fieldId('name')).toBe('name');
  });
  it('finds the wizard field of an error, or none', () => {
    const e = (field?: string) => new APIError(400, { code: 'invalid', message: 'bad', field });
    expect(formField(e('name'))).toBe('name');
    expect(formField(e('disks[0].image'))).toBe('disks-0-image');
    expect(formField(e('cloudInit.userData'))).toBe('cloudInit-userData');
    expect(formField(e('stopTimeoutSeconds'))).toBeUndefined();
    expect(formField(e())).toBeUndefined();
    expect(formField(new Error('x'))).toBeUndefined();
  });
});

describe('visibleWindow', () => {
  it('renders the rows in view plus overscan', () => {
    const w = visibleWindow(10000, 30, 3000, 600, 5);
    expect(w.start).toBe(95);
    expect(w.end).toBe(125);
    expect(w.padTop).toBe(95 * 30);
    expect(w.padBottom).toBe((10000 - 125) * 30);
  });
  it('clamps at both ends', () => {
    expect(visibleWindow(3, 30, 0, 600)).toEqual({ start: 0, end: 3, padTop: 0, padBottom: 0 });
    expect(visibleWindow(0, 30, 500, 600)).toEqual({ start: 0, end: 0, padTop: 0, padBottom: 0 });
    const w = visibleWindow(100, 30, 99999, 600, 0);
    expect(w.end).toBe(100);
    expect(w.start).toBeLessThanOrEqual(w.end);
  });
});

describe('roles', () => {
  it('follows the role ladder', () => {
    expect(allows('viewer', false, 'read')).toBe(true);
    expect(allows('viewer', false, 'power')).toBe(false);
    expect(allows('operator', false, 'console')).toBe(true);
    expect(allows('operator', false, 'create')).toBe(false);
    expect(allows('member', false, 'delete')).toBe(true);
    expect(allows('member', false, 'audit')).toBe(false);
    expect(allows('admin', false, 'audit')).toBe(true);
    expect(allows('', false, 'read')).toBe(false);
    expect(allows('', true, 'audit')).toBe(true);
  });
});

describe('lease', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  const l = { expiresAt: '2026-01-03T00:00:00Z', deleteAt: '2026-01-04T00:00:00Z' };
  it('counts down to expiry, then to deletion', () => {
    expect(leaseText(l, now)).toBe('expires in 2d0h, deleted 1d0h later');
    expect(leaseText(l, Date.parse('2026-01-03T12:00:00Z'))).toBe('expired, stopped; deleted in 12h0m');
    expect(leaseText(l, Date.parse('2026-01-05T00:00:00Z'))).toBe('expired; being deleted');
    expect(leaseText(undefined, now)).toBe('no lease');
    expect(span(59_000)).toBe('59s');
    expect(span(61_000)).toBe('1m1s');
  });
});

describe('websocket', () => {
  it('carries the token as a subprotocol', () => {
    expect(wsProtocols('pvs_abc_def')).toEqual(['binary', 'bearer.pvs_abc_def']);
    expect(wsProtocols('')).toEqual(['binary']);
    expect(wsURL({ protocol: 'https:', host: 'h:7443' }, '/v1/x')).toBe('wss://h:7443/v1/x');
    expect(wsURL({ protocol: 'http:', host: 'h' }, '/v1/x')).toBe('ws://h/v1/x');
  });
});

describe('vm table', () => {
  const vm = (name: string, state: string, host: string, labels: Record<string, string> = {}, provider?: string): VMRow => ({
    name,
    project: 'p',
    labels,
    spec: { host, vcpus: name.length, memoryMiB: 128, provider: provider ? { name: provider } : undefined },
    status: { powerState: state, ips: name === 'web' ? ['10.0.0.5'] : [] },
  });
  const vms = [vm('web', 'running', 'h1', { tier: 'web' }), vm('db-main', 'stopped', 'h2', { tier: 'db' }), vm('vc-1', 'running', 'esx', {}, 'vc')];
  it('searches names, labels and addresses', () => {
    expect(filterVMs(vms, { ...emptyQuery, q: '10.0.0' }).map((v) => v.name)).toEqual(['web']);
    expect(filterVMs(vms, { ...emptyQuery, q: 'DB' }).map((v) => v.name)).toEqual(['db-main']);
  });
  it('filters by state, host, provider and label', () => {
    expect(filterVMs(vms, { ...emptyQuery, state: 'running' }).map((v) => v.name)).toEqual(['vc-1', 'web']);
    expect(filterVMs(vms, { ...emptyQuery, host: 'h2' }).map((v) => v.name)).toEqual(['db-main']);
    expect(filterVMs(vms, { ...emptyQuery, provider: 'polyvisor' }).map((v) => v.name)).toEqual(['db-main', 'web']);
    expect(filterVMs(vms, { ...emptyQuery, label: 'tier=db' }).map((v) => v.name)).toEqual(['db-main']);
    expect(filterVMs(vms, { ...emptyQuery, label: 'tier' }).length).toBe(2);
  });
  it('sorts by a column either way', () => {
    expect(filterVMs(vms, { ...emptyQuery, sort: '-vcpus' }).map((v) => v.name)).toEqual(['db-main', 'vc-1', 'web']);
    expect(filterVMs(vms, { ...emptyQuery, sort: 'host' }).map((v) => v.name)).toEqual(['vc-1', 'web', 'db-main']);
  });
});

describe('url state', () => {
  it('keeps only what differs from the defaults, and reads it back', () => {
    const d = { q: '', state: '', sort: 'name' };
    const s = toSearch({ q: 'web 1', state: 'running', sort: 'name' }, d);
    expect(s).toBe('?q=web+1&state=running');
    expect(fromSearch(s, d)).toEqual({ q: 'web 1', state: 'running', sort: 'name' });
    expect(toSearch(d, d)).toBe('');
    expect(fromSearch('?other=1', d)).toEqual(d);
  });
});

describe('inventory', () => {
  it('groups by provider, datacenter/cluster and host', () => {
    const mk = (name: string, host: string, provider?: { name: string; datacenter?: string; cluster?: string }): VMRow => ({
      name,
      spec: { host, vcpus: 1, memoryMiB: 1, provider },
      status: { powerState: 'running' },
    });
    const t = inventory([mk('b', 'h1'), mk('a', 'h1'), mk('x', 'esx1', { name: 'vc', datacenter: 'DC0', cluster: 'C0' }), mk('u', '')]);
    expect([...t.keys()].sort()).toEqual(['polyvisor', 'vc']);
    expect(t.get('polyvisor')!.get('')!.get('h1')!.map((v) => v.name)).toEqual(['a', 'b']);
    expect(t.get('polyvisor')!.get('')!.get('(unplaced)')!.length).toBe(1);
    expect(t.get('vc')!.get('DC0/C0')!.get('esx1')!.map((v) => v.name)).toEqual(['x']);
  });
});

describe('usage series', async () => {
  const { cpuPercent, sparkPoints } = await import('./stats');
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
