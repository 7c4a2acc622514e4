import { describe, expect, it } from 'vitest';
import { emptyToken, narrowed, tokenBody, tokenScope } from './tokens';

describe('tokenBody', () => {
  it('sends only what narrows the token', () => {
    expect(tokenBody({ ...emptyToken, name: ' ci ' })).toEqual({ name: 'ci' });
    expect(tokenBody({ name: 'ci', project: 'shop', role: 'viewer', expiresInSeconds: '86400' })).toEqual({ name: 'ci', project: 'shop', role: 'viewer', expiresInSeconds: 86400 });
    expect(tokenBody({ name: 'ci', project: '', role: '', expiresInSeconds: '0' })).toEqual({ name: 'ci' });
    expect(tokenBody({ ...emptyToken, name: 'ci', current: 'pw' })).toEqual({ name: 'ci', current: 'pw' });
  });
  it('sends a role without a project, for the API to refuse', () => {
    expect(tokenBody({ name: 'ci', project: '', role: 'viewer', expiresInSeconds: '' })).toEqual({ name: 'ci', role: 'viewer' });
  });
});

describe('tokenScope', () => {
  it('tells how far a token reaches', () => {
    expect(tokenScope({ kind: 'api', project: 'shop', role: 'viewer' })).toBe('viewer in shop only');
    expect(tokenScope({ kind: 'api', project: 'shop' })).toBe("its user's role in shop only");
    expect(tokenScope({ kind: 'api' })).toBe('everything its user may do');
  });
  it('knows a narrowed session', () => {
    expect(narrowed({ project: 'shop', role: 'viewer' })).toBe(true);
    expect(narrowed({})).toBe(false);
    expect(narrowed(undefined)).toBe(false);
  });
});
