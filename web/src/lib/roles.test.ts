import { describe, expect, it } from 'vitest';
import { allows, mayReadAudit, needsConfirm, vmActions } from './roles';

describe('allows', () => {
  it('follows the role ladder', () => {
    expect(allows('viewer', false, 'read')).toBe(true);
    expect(allows('viewer', false, 'power')).toBe(false);
    expect(allows('viewer', false, 'console')).toBe(false);
    expect(allows('operator', false, 'console')).toBe(true);
    expect(allows('operator', false, 'cancel')).toBe(true);
    expect(allows('operator', false, 'create')).toBe(false);
    expect(allows('member', false, 'delete')).toBe(true);
    expect(allows('member', false, 'snapshot')).toBe(true);
    expect(allows('member', false, 'lease')).toBe(true);
    expect(allows('member', false, 'audit')).toBe(false);
    expect(allows('admin', false, 'audit')).toBe(true);
  });
  it('gives nothing without a role, everything to a superadmin', () => {
    expect(allows('', false, 'read')).toBe(false);
    expect(allows(undefined, false, 'read')).toBe(false);
    expect(allows('owner', false, 'read')).toBe(false);
    expect(allows('', true, 'audit')).toBe(true);
  });
  it('shows the audit log to admins of some project', () => {
    expect(mayReadAudit(false, { a: 'viewer', b: 'admin' })).toBe(true);
    expect(mayReadAudit(false, { a: 'member' })).toBe(false);
    expect(mayReadAudit(false, undefined)).toBe(false);
    expect(mayReadAudit(true, {})).toBe(true);
  });
});

describe('vmActions', () => {
  it('offers a viewer nothing', () => {
    for (const st of ['running', 'stopped', 'paused']) expect(vmActions(st, st, 'viewer', false)).toEqual([]);
  });
  it('offers an operator power but not delete', () => {
    expect(vmActions('running', 'running', 'operator', false)).toEqual(['stop', 'restart', 'pause']);
    expect(vmActions('stopped', 'stopped', 'operator', false)).toEqual(['start']);
    expect(vmActions('paused', 'paused', 'operator', false)).toEqual(['resume', 'stop']);
  });
  it('adds delete for members, admins and superadmins', () => {
    expect(vmActions('stopped', 'stopped', 'member', false)).toEqual(['start', 'delete']);
    expect(vmActions('running', 'running', 'admin', false)).toContain('delete');
    expect(vmActions('running', 'running', '', true)).toEqual(['stop', 'restart', 'pause', 'delete']);
  });
  it('offers start again when a running VM is found stopped', () => {
    expect(vmActions('running', 'error', 'operator', false)).toEqual(['start', 'stop']);
  });
  it('offers a restart now for a crashed VM its policy restarts later, a start for one it left stopped', () => {
    expect(vmActions('running', 'crashed', 'operator', false)).toEqual(['restart', 'stop']);
    expect(vmActions('stopped', 'crashed', 'operator', false)).toEqual(['start']);
  });
  it('asks before what loses work', () => {
    expect(['start', 'stop', 'restart', 'pause', 'resume', 'delete'].filter((a) => needsConfirm(a as never))).toEqual(['stop', 'restart', 'delete']);
  });
});
