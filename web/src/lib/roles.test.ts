import { describe, expect, it } from 'vitest';
import { Policy, allows, describePermission, mayReadAudit, needsConfirm, vmActions } from './roles';

// The answer of GET /v1/roles as the server gives it today; the console
// must follow whatever the API says, so a second policy below differs.
const api = new Policy([
  { name: 'viewer', permissions: ['project.read', 'vm.read', 'image.read', 'operation.read', 'provider.read'] },
  { name: 'operator', permissions: ['project.read', 'vm.read', 'image.read', 'operation.read', 'provider.read', 'vm.power', 'vm.console', 'operation.cancel'] },
  {
    name: 'member',
    permissions: ['project.read', 'vm.read', 'image.read', 'operation.read', 'provider.read', 'vm.power', 'vm.console', 'operation.cancel', 'vm.create', 'vm.delete', 'vm.update', 'image.create', 'image.delete'],
  },
  {
    name: 'admin',
    permissions: [
      'project.read', 'vm.read', 'image.read', 'operation.read', 'provider.read', 'vm.power', 'vm.console', 'operation.cancel',
      'vm.create', 'vm.delete', 'vm.update', 'image.create', 'image.delete', 'project.update', 'member.manage', 'audit.read',
    ],
  },
]);

describe('Policy', () => {
  it('answers from the roles the API listed', () => {
    expect(api.allows('viewer', 'vm.read')).toBe(true);
    expect(api.allows('viewer', 'vm.power')).toBe(false);
    expect(api.allows('operator', 'vm.console')).toBe(true);
    expect(api.allows('operator', 'vm.create')).toBe(false);
    expect(api.allows('member', 'image.delete')).toBe(true);
    expect(api.allows('member', 'member.manage')).toBe(false);
    expect(api.allows('admin', 'audit.read')).toBe(true);
  });
  it('follows a different policy when the API says another thing', () => {
    const p = new Policy([
      { name: 'viewer', permissions: ['vm.read', 'vm.console'] },
      { name: 'auditor', permissions: ['audit.read'] },
    ]);
    expect(p.allows('viewer', 'vm.console')).toBe(true);
    expect(p.allows('auditor', 'audit.read')).toBe(true);
    expect(p.allows('admin', 'vm.read')).toBe(false);
    expect(mayReadAudit(p, false, { x: 'auditor' })).toBe(true);
    expect(p.names).toEqual(['viewer', 'auditor']);
  });
  it('gives nothing without a role or for an unknown one', () => {
    expect(api.allows('', 'vm.read')).toBe(false);
    expect(api.allows(undefined, 'vm.read')).toBe(false);
    expect(api.allows('owner', 'vm.read')).toBe(false);
    expect(new Policy([{ name: 'viewer', permissions: null }]).allows('viewer', 'vm.read')).toBe(false);
  });
  it('tells what each role adds to the one before', () => {
    expect(api.added('viewer')).toEqual(['project.read', 'vm.read', 'image.read', 'operation.read', 'provider.read']);
    expect(api.added('operator')).toEqual(['vm.power', 'vm.console', 'operation.cancel']);
    expect(api.added('admin')).toEqual(['project.update', 'member.manage', 'audit.read']);
  });
});

describe('allows', () => {
  it('lets a superadmin do everything', () => {
    expect(allows(api, '', true, 'audit.read')).toBe(true);
    expect(allows(api, 'viewer', false, 'vm.power')).toBe(false);
  });
  it('shows the audit log to admins of some project', () => {
    expect(mayReadAudit(api, false, { a: 'viewer', b: 'admin' })).toBe(true);
    expect(mayReadAudit(api, false, { a: 'member' })).toBe(false);
    expect(mayReadAudit(api, false, undefined)).toBe(false);
    expect(mayReadAudit(api, true, {})).toBe(true);
  });
});

describe('vmActions', () => {
  const as = (role: string, superadmin = false) => (p: string) => allows(api, role, superadmin, p);
  it('offers a viewer nothing', () => {
    for (const st of ['running', 'stopped', 'paused']) expect(vmActions(st, st, as('viewer'))).toEqual([]);
  });
  it('offers an operator power but not delete', () => {
    expect(vmActions('running', 'running', as('operator'))).toEqual(['stop', 'restart', 'pause']);
    expect(vmActions('stopped', 'stopped', as('operator'))).toEqual(['start']);
    expect(vmActions('paused', 'paused', as('operator'))).toEqual(['resume', 'stop']);
  });
  it('adds delete for members, admins and superadmins', () => {
    expect(vmActions('stopped', 'stopped', as('member'))).toEqual(['start', 'delete']);
    expect(vmActions('running', 'running', as('admin'))).toContain('delete');
    expect(vmActions('running', 'running', as('', true))).toEqual(['stop', 'restart', 'pause', 'delete']);
  });
  it('offers start again when a running VM is found stopped', () => {
    expect(vmActions('running', 'error', as('operator'))).toEqual(['start', 'stop']);
  });
  it('offers a restart now for a crashed VM its policy restarts later, a start for one it left stopped', () => {
    expect(vmActions('running', 'crashed', as('operator'))).toEqual(['restart', 'stop']);
    expect(vmActions('stopped', 'crashed', as('operator'))).toEqual(['start']);
  });
  it('asks before what loses work', () => {
    expect(['start', 'stop', 'restart', 'pause', 'resume', 'delete'].filter((a) => needsConfirm(a as never))).toEqual(['stop', 'restart', 'delete']);
  });
});

describe('describePermission', () => {
  it('says what a permission lets one do', () => {
    expect(describePermission('vm.power')).toBe('start, stop and pause VMs');
    expect(describePermission('audit.read')).toBe('see the audit log');
    expect(describePermission('member.manage')).toBe('manage members');
    expect(describePermission('odd')).toBe('odd');
  });
});
