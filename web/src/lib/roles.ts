// What a role lets the console offer; the API decides anyway.
export const roles = ['viewer', 'operator', 'member', 'admin'] as const;
export type Role = (typeof roles)[number] | '';

export type Action = 'read' | 'power' | 'console' | 'create' | 'delete' | 'update' | 'audit';

const needs: Record<Action, Role> = {
  read: 'viewer',
  power: 'operator',
  console: 'operator',
  create: 'member',
  delete: 'member',
  update: 'member',
  audit: 'admin',
};

export function rank(role: Role): number {
  return roles.indexOf(role as (typeof roles)[number]) + 1;
}

export function allows(role: Role, superadmin: boolean, action: Action): boolean {
  if (superadmin) return true;
  return rank(role) >= rank(needs[action]) && rank(role) > 0;
}
