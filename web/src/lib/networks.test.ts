import { describe, expect, it } from 'vitest';
import { emptyRule, ruleBody, ruleText } from './networks';

describe('ruleBody', () => {
  it('reads one port and a range', () => {
    expect(ruleBody({ ...emptyRule, ports: '22' })).toEqual({ direction: 'ingress', protocol: 'tcp', portMin: 22, portMax: 22 });
    expect(ruleBody({ ...emptyRule, ports: '8000-8100' })).toMatchObject({ portMin: 8000, portMax: 8100 });
  });
  it('sends what does not parse for the server to name', () => {
    expect(ruleBody({ ...emptyRule, ports: 'ssh' })).toMatchObject({ portMin: -1, portMax: -1 });
  });
  it('leaves any protocol out and marks an IPv6 CIDR', () => {
    const r = ruleBody({ ...emptyRule, protocol: 'any', remoteCIDR: '2001:db8::/32' });
    expect(r.protocol).toBeUndefined();
    expect(r).toMatchObject({ remoteCIDR: '2001:db8::/32', etherType: 'IPv6' });
  });
  it('names a remote group', () => {
    expect(ruleBody({ ...emptyRule, remoteGroup: 'web' })).toMatchObject({ remoteGroup: 'web' });
  });
});

describe('ruleText', () => {
  it('says a rule in a line', () => {
    expect(ruleText({ direction: 'ingress', protocol: 'tcp', portMin: 22, portMax: 22, remoteCIDR: '10.0.0.0/8' })).toBe('ingress tcp 22 from 10.0.0.0/8');
    expect(ruleText({ direction: 'egress' })).toBe('egress any protocol to anywhere');
    expect(ruleText({ direction: 'ingress', remoteGroup: 'default' })).toBe('ingress any protocol from group default');
  });
});
