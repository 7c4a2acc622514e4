// Live migration in the console: which VMs may be offered a migration,
// which hosts to offer as its target, how one goes, and what a drain did.
// The API decides anyway (docs/API.md, POST /v1/vms/{name}/migrate).
import { hostUse, type HostLike } from './capacity';

export interface MigratableVM {
  spec: {
    host: string;
    vcpus: number;
    memoryMiB: number;
    powerState: string;
    provider?: unknown;
    deletion?: unknown;
    migration?: { operation: string; target: string };
    volumes?: unknown[];
  };
  status: { powerState: string; volumes?: unknown[] };
}

// whyNotMigrate says why a VM cannot migrate now, or '' when it may:
// only Polyvisor's own running VMs without volumes move, one migration
// at a time.
export function whyNotMigrate(vm: MigratableVM): string {
  const s = vm.spec;
  if (s.deletion) return 'it is being deleted';
  if (s.provider) return 'its connected estate decides where it runs';
  if (s.migration) return `it is already migrating to ${s.migration.target}`;
  const moves = (p: string | undefined) => p === 'running' || p === 'stopped';
  if (!moves(s.powerState) || s.powerState !== vm.status.powerState) return 'only a running VM migrates (live), or a stopped one (its disks copied)';
  // Volumes: a shared pool's follows, a dir pool's does not; the API
  // says which (422 naming the volume).
  const plugged = (vm.status.volumes ?? []) as { volume?: string }[];
  const unplugging = plugged.find((p) => !(s.volumes ?? []).some((a) => (a as { volume?: string }).volume === p.volume));
  if (unplugging) return `volume ${unplugging.volume ?? ''} is being unplugged: wait for it`;
  return '';
}

export interface TargetHost extends HostLike {
  provider?: unknown;
  spec?: { unschedulable?: boolean };
  status: HostLike['status'] & { state: string };
}

export interface Target {
  name: string;
  // why is '' for a host the VM may move to, else why not.
  why: string;
}

// migrationTargets lists the hosts a VM could move to, its own host and
// providers' hosts left out, in name order; a host that is not ready,
// cordoned or without room for the VM says why.
export function migrationTargets(vm: MigratableVM, hosts: TargetHost[]): Target[] {
  return hosts
    .filter((h) => !h.provider && h.name !== vm.spec.host)
    .map((h) => ({ name: h.name, why: targetWhy(vm, h) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function targetWhy(vm: MigratableVM, h: TargetHost): string {
  if (h.status.state !== 'ready') return h.status.state || 'not ready';
  if (h.spec?.unschedulable) return 'cordoned';
  const u = hostUse(h);
  if (u.vcpus.capacity - u.vcpus.used < vm.spec.vcpus) return 'not enough vCPUs';
  if (u.memory.capacity - u.memory.used < vm.spec.memoryMiB) return 'not enough memory';
  return '';
}

export interface MigrationProgress {
  phase: string;
  diskTotal?: number;
  diskDone?: number;
  memoryTotal?: number;
  memoryRemaining?: number;
  throttle?: number;
  error?: string;
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

// migrationText tells in words how a migration goes.
export function migrationText(m: MigrationProgress): string {
  if (m.phase === 'failed') return m.error ? `failed: ${m.error}` : 'failed';
  if (m.phase === 'completed') return 'completed';
  const parts = [m.phase];
  if (m.phase === 'storage' && m.diskTotal) parts.push(`disks ${pct(m.diskDone ?? 0, m.diskTotal)} % of ${gib(m.diskTotal)}`);
  if (m.phase !== 'storage' && m.memoryTotal) {
    const left = Math.min(m.memoryRemaining ?? m.memoryTotal, m.memoryTotal);
    parts.push(`memory ${pct(m.memoryTotal - left, m.memoryTotal)} % of ${gib(m.memoryTotal)}`);
  }
  if (m.throttle) parts.push(`guest slowed by ${m.throttle} %`);
  return parts.join(', ');
}

function pct(done: number, total: number): number {
  if (!(total > 0)) return 0;
  return Math.max(0, Math.min(100, Math.floor((done / total) * 100)));
}

export interface Move {
  vm: string;
  target?: string;
  // pending, moving, migrated (live), moved (stopped), skipped, failed or
  // cancelled.
  outcome: string;
  error?: string;
}

// drainSummary tells what a drain did: how many VMs moved, and whether
// the host was left empty.
export function drainSummary(host: string, moves: Move[] | null): string {
  const all = moves ?? [];
  if (all.length === 0) return `${host} had no VMs to move.`;
  const moved = all.filter((m) => m.outcome === 'migrated' || m.outcome === 'moved').length;
  const stayed = all.length - moved;
  if (stayed === 0) return `All ${moved} VMs left ${host}; it stays cordoned.`;
  return `${moved} of ${all.length} VMs left ${host}; ${stayed} stayed (below, with why). ${host} stays cordoned.`;
}
