// What a role lets the console offer; the API decides anyway.
export const roles = ['viewer', 'operator', 'member', 'admin'] as const;
export type Role = (typeof roles)[number] | '';

export type Action = 'read' | 'power' | 'console' | 'cancel' | 'create' | 'delete' | 'update' | 'snapshot' | 'lease' | 'audit' | 'settings';

const needs: Record<Action, Role> = {
  read: 'viewer',
  power: 'operator',
  console: 'operator',
  cancel: 'operator',
  create: 'member',
  delete: 'member',
  update: 'member',
  snapshot: 'member',
  lease: 'member',
  audit: 'admin',
  settings: 'admin',
};

export function rank(role: Role | string | undefined): number {
  return roles.indexOf(role as (typeof roles)[number]) + 1;
}

export function allows(role: Role | string | undefined, superadmin: boolean, action: Action): boolean {
  if (superadmin) return true;
  return rank(role) > 0 && rank(role) >= rank(needs[action]);
}

// mayReadAudit: the audit page is for superadmins and the admins of at
// least one project (it then covers those projects).
export function mayReadAudit(superadmin: boolean, rolesByProject: Record<string, string> | undefined): boolean {
  return superadmin || Object.values(rolesByProject ?? {}).some((r) => allows(r, false, 'audit'));
}

export type VMAction = 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'delete';

// vmActions lists the buttons a VM page shows: what the VM's desired and
// observed states make sensible, kept to what the role allows.
export function vmActions(desired: string, observed: string, role: Role | string | undefined, superadmin: boolean): VMAction[] {
  let acts: VMAction[];
  if (desired === 'paused' || observed === 'paused') acts = ['resume', 'stop'];
  else if (desired === 'running' && observed === 'crashed') acts = ['restart', 'stop']; // restart: now, not after the crash pause
  else if (desired === 'running') acts = observed === 'stopped' || observed === 'error' ? ['start', 'stop'] : ['stop', 'restart', 'pause'];
  else acts = ['start'];
  const out: VMAction[] = allows(role, superadmin, 'power') ? acts : [];
  if (allows(role, superadmin, 'delete')) out.push('delete');
  return out;
}

// needsConfirm: the actions that lose work or the VM ask first.
export function needsConfirm(a: VMAction): boolean {
  return a === 'stop' || a === 'restart' || a === 'delete';
}
