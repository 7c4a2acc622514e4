import { describe, expect, it } from 'vitest';
import { distinct, emptyQuery, filterVMs, inventory, vmPath, type VMRow } from './vmfilter';

const vm = (name: string, state: string, host: string, labels: Record<string, string> = {}, provider?: string): VMRow => ({
  name,
  project: 'p',
  labels,
  spec: { host, vcpus: name.length, memoryMiB: 128, provider: provider ? { name: provider } : undefined },
  status: { powerState: state, ips: name === 'web' ? ['10.0.0.5'] : [] },
});
const vms = [vm('web', 'running', 'h1', { tier: 'web' }), vm('db-main', 'stopped', 'h2', { tier: 'db' }), vm('vc-1', 'running', 'esx', {}, 'vc')];
const names = (l: VMRow[]) => l.map((v) => v.name);

describe('VM search', () => {
  it('searches names, labels and addresses, ignoring case', () => {
    expect(names(filterVMs(vms, { ...emptyQuery, q: '10.0.0' }))).toEqual(['web']);
    expect(names(filterVMs(vms, { ...emptyQuery, q: 'DB' }))).toEqual(['db-main']);
    expect(names(filterVMs(vms, { ...emptyQuery, q: 'tier' }))).toEqual(['db-main', 'web']);
    expect(names(filterVMs(vms, { ...emptyQuery, q: 'nothing' }))).toEqual([]);
  });
});

describe('VM filters', () => {
  it('filters by state, host, provider and label', () => {
    expect(names(filterVMs(vms, { ...emptyQuery, state: 'running' }))).toEqual(['vc-1', 'web']);
    expect(names(filterVMs(vms, { ...emptyQuery, host: 'h2' }))).toEqual(['db-main']);
    expect(names(filterVMs(vms, { ...emptyQuery, provider: 'polyvisor' }))).toEqual(['db-main', 'web']);
    expect(names(filterVMs(vms, { ...emptyQuery, provider: 'vc' }))).toEqual(['vc-1']);
    expect(names(filterVMs(vms, { ...emptyQuery, label: 'tier=db' }))).toEqual(['db-main']);
    expect(filterVMs(vms, { ...emptyQuery, label: 'tier' }).length).toBe(2);
    expect(names(filterVMs(vms, { ...emptyQuery, state: 'running', provider: 'polyvisor' }))).toEqual(['web']);
  });
  it('lists the values of a column for its filter', () => {
    expect(distinct(vms, (v) => v.spec.host)).toEqual(['esx', 'h1', 'h2']);
  });
});

describe('VM sort', () => {
  it('sorts by a column either way, then by name', () => {
    expect(names(filterVMs(vms, { ...emptyQuery, sort: '-vcpus' }))).toEqual(['db-main', 'vc-1', 'web']);
    expect(names(filterVMs(vms, { ...emptyQuery, sort: 'host' }))).toEqual(['vc-1', 'web', 'db-main']);
    expect(names(filterVMs(vms, { ...emptyQuery, sort: 'state' }))).toEqual(['vc-1', 'web', 'db-main']);
    expect(names(filterVMs(vms, { ...emptyQuery, sort: '-name' }))).toEqual(['web', 'vc-1', 'db-main']);
    expect(names(filterVMs(vms, { ...emptyQuery, sort: 'bogus' }))).toEqual(['db-main', 'vc-1', 'web']);
  });
  it('does not change the list it is given', () => {
    const copy = [...vms];
    filterVMs(vms, { ...emptyQuery, sort: '-name' });
    expect(vms).toEqual(copy);
  });
  // How fast: vmfilter.bench.ts (npx vitest bench), not a bound here.
  it('copes with thousands of VMs', () => {
    const many = Array.from({ length: 5000 }, (_, i) => vm(`vm-${String(i).padStart(4, '0')}`, i % 3 ? 'running' : 'stopped', `h${i % 7}`));
    const got = filterVMs(many, { ...emptyQuery, q: 'vm-1', state: 'running', sort: '-name' });
    const want: string[] = [];
    for (let i = 1999; i >= 1000; i--) if (i % 3) want.push(`vm-${i}`);
    expect(names(got)).toEqual(want);
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
  it('links a VM to its page', () => {
    expect(vmPath({ name: 'web 1', project: 'team a' })).toBe('/vms/team%20a/web%201');
    expect(vmPath({ name: 'web' })).toBe('/vms/default/web');
  });
});
