// What a role lets the console offer, read from the API (GET /v1/roles):
// the console holds no copy of the policy. The API decides anyway.

// A permission as the API names it: "<kind>.<verb>" ("vm.power").
export type Permission = string;

export interface RoleInfo {
  name: string;
  permissions: Permission[] | null;
}

// Policy is the API's list of project roles, least privileged first, and
// what each allows.
export class Policy {
  private readonly perms: Map<string, Set<Permission>>;
  readonly names: string[];
  constructor(roles: RoleInfo[]) {
    this.names = roles.map((r) => r.name);
    this.perms = new Map(roles.map((r) => [r.name, new Set(r.permissions ?? [])]));
  }
  // allows tells whether role holds permission p ("" and unknown roles hold nothing).
  allows(role: string | undefined, p: Permission): boolean {
    return !!role && (this.perms.get(role)?.has(p) ?? false);
  }
  permissions(role: string): Permission[] {
    return [...(this.perms.get(role) ?? [])];
  }
  // added lists what a role adds to the one before it, to describe roles
  // without repeating what they inherit.
  added(role: string): Permission[] {
    const i = this.names.indexOf(role);
    const before = i > 0 ? this.perms.get(this.names[i - 1]) : undefined;
    return this.permissions(role).filter((p) => !before?.has(p));
  }
}

// allows: a superadmin (whose token is not narrowed: the API says so in
// whoami) may do everything; anyone else what their role in the project holds.
export function allows(policy: Policy, role: string | undefined, superadmin: boolean, p: Permission): boolean {
  return superadmin || policy.allows(role, p);
}

// mayReadAudit: the audit page is for superadmins and those who may read
// the audit log of at least one project (it then covers those projects).
export function mayReadAudit(policy: Policy, superadmin: boolean, rolesByProject: Record<string, string> | undefined): boolean {
  return superadmin || Object.values(rolesByProject ?? {}).some((r) => policy.allows(r, 'audit.read'));
}

export type VMAction = 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'delete';

// vmActions lists the buttons a VM page shows: what the VM's desired and
// observed states make sensible, kept to what may (the caller's
// permissions in the VM's project) allows.
export function vmActions(desired: string, observed: string, may: (p: Permission) => boolean): VMAction[] {
  let acts: VMAction[];
  if (desired === 'paused' || observed === 'paused') acts = ['resume', 'stop'];
  else if (desired === 'running' && observed === 'crashed') acts = ['restart', 'stop']; // restart: now, not after the crash pause
  else if (desired === 'running') acts = observed === 'stopped' || observed === 'error' ? ['start', 'stop'] : ['stop', 'restart', 'pause'];
  else acts = ['start'];
  const out: VMAction[] = may('vm.power') ? acts : [];
  if (may('vm.delete')) out.push('delete');
  return out;
}

// needsConfirm: the actions that lose work or the VM ask first.
export function needsConfirm(a: VMAction): boolean {
  return a === 'stop' || a === 'restart' || a === 'delete';
}

// describePermission says in words what a permission lets one do.
const words: Record<string, string> = {
  read: 'see',
  power: 'start, stop and pause',
  console: 'open the consoles of',
  cancel: 'cancel',
  create: 'create',
  delete: 'delete',
  update: 'change',
  manage: 'manage',
};
export function describePermission(p: Permission): string {
  const [kind, verb] = p.split('.', 2);
  if (!verb) return p;
  const plural = ({ vm: 'VMs', audit: 'the audit log', project: 'the project' } as Record<string, string>)[kind] ?? `${kind}s`;
  return `${words[verb] ?? verb} ${plural}`;
}
