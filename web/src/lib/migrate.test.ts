import { describe, expect, it } from 'vitest';
import { drainSummary, migrationTargets, migrationText, whyNotMigrate, type MigratableVM, type TargetHost } from './migrate';

const vm = (over: Partial<MigratableVM['spec']> = {}, observed = 'running', statusVolumes?: unknown[]): MigratableVM => ({
  spec: { host: 'h1', vcpus: 2, memoryMiB: 512, powerState: 'running', ...over },
  status: { powerState: observed, volumes: statusVolumes },
});

const host = (name: string, over: { state?: string; cordoned?: boolean; provider?: boolean; vcpus?: number; mem?: number } = {}): TargetHost => ({
  name,
  provider: over.provider ? { name: 'vc' } : undefined,
  spec: { unschedulable: over.cordoned },
  status: {
    state: over.state ?? 'ready',
    cpus: 4,
    memoryMiB: 4096,
    allocated: { vcpus: over.vcpus ?? 0, memoryMiB: over.mem ?? 0, vms: 0 },
    capacity: { vcpus: 16, memoryMiB: 3840 },
  },
});

describe('whyNotMigrate', () => {
  it('lets a running VM of its own host move', () => {
    expect(whyNotMigrate(vm())).toBe('');
  });
  it('says why for what the API refuses', () => {
    expect(whyNotMigrate(vm({ powerState: 'stopped' }, 'stopped'))).toBe('');
    expect(whyNotMigrate(vm({ powerState: 'paused' }, 'paused'))).toMatch(/running/);
    expect(whyNotMigrate(vm({}, 'paused'))).toMatch(/running/);
    expect(whyNotMigrate(vm({ migration: { operation: 'o1', target: 'h2' } }))).toMatch(/already migrating to h2/);
    expect(whyNotMigrate(vm({ provider: { name: 'vc' } }))).toMatch(/estate/);
    expect(whyNotMigrate(vm({ deletion: {} }))).toMatch(/deleted/);
    // A volume attached may follow (a shared pool's): the API judges.
    expect(whyNotMigrate(vm({ volumes: [{ volume: 'v1' }] }, 'running', [{ volume: 'v1' }]))).toBe('');
    // A volume still plugged in while its detach goes on does not.
    expect(whyNotMigrate(vm({}, 'running', [{ volume: 'v1' }]))).toMatch(/v1 is being unplugged/);
  });
});

describe('migrationTargets', () => {
  it('leaves out the VM own host and providers, and says why a host cannot take it', () => {
    const t = migrationTargets(vm(), [
      host('h1'),
      host('h4', { provider: true }),
      host('h3', { cordoned: true }),
      host('h2'),
      host('h5', { state: 'notready' }),
      host('h6', { vcpus: 15 }),
      host('h7', { mem: 3840 - 511 }),
      host('h8', { vcpus: 14, mem: 3840 - 512 }),
    ]);
    expect(t).toEqual([
      { name: 'h2', why: '' },
      { name: 'h3', why: 'cordoned' },
      { name: 'h5', why: 'notready' },
      { name: 'h6', why: 'not enough vCPUs' },
      { name: 'h7', why: 'not enough memory' },
      { name: 'h8', why: '' },
    ]);
  });
});

describe('migrationText', () => {
  it('tells the phase and how far it got', () => {
    expect(migrationText({ phase: 'storage', diskTotal: 2 * 2 ** 30, diskDone: 2 ** 30 })).toBe('storage, disks 50 % of 2.0 GiB');
    expect(migrationText({ phase: 'memory', memoryTotal: 2 ** 30, memoryRemaining: 2 ** 28, throttle: 20 })).toBe('memory, memory 75 % of 1.0 GiB, guest slowed by 20 %');
    expect(migrationText({ phase: 'memory', memoryTotal: 2 ** 30, memoryRemaining: 2 ** 31 })).toBe('memory, memory 0 % of 1.0 GiB');
    expect(migrationText({ phase: 'failed', error: 'target lost' })).toBe('failed: target lost');
    expect(migrationText({ phase: 'completed' })).toBe('completed');
  });
});

describe('drainSummary', () => {
  it('counts the moves and says the host stays cordoned', () => {
    expect(drainSummary('h1', [])).toBe('h1 had no VMs to move.');
    expect(drainSummary('h1', null)).toBe('h1 had no VMs to move.');
    expect(drainSummary('h1', [{ vm: 'p/a', outcome: 'migrated', target: 'h2' }])).toBe('All 1 VMs left h1; it stays cordoned.');
    expect(drainSummary('h1', [{ vm: 'p/a', outcome: 'migrated' }, { vm: 'p/b', outcome: 'skipped', error: 'paused' }])).toMatch(/^1 of 2 VMs left h1; 1 stayed/);
    expect(drainSummary('h1', [{ vm: 'p/a', outcome: 'migrated' }, { vm: 'p/b', outcome: 'moved' }])).toBe('All 2 VMs left h1; it stays cordoned.');
  });
});
