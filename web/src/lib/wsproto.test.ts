import { describe, expect, it } from 'vitest';
import { consolePath, wsProtocols, wsURL } from './wsproto';

describe('websocket', () => {
  it('carries the token as a subprotocol beside binary', () => {
    const tok = 'pvs_0123456789ab_' + 'f'.repeat(64);
    expect(wsProtocols(tok)).toEqual(['binary', `bearer.${tok}`]);
    expect(wsProtocols(` ${tok}\n`)).toEqual(['binary', `bearer.${tok}`]);
    expect(wsProtocols('')).toEqual(['binary']);
  });
  it('does not offer what is no valid subprotocol', () => {
    expect(wsProtocols('a b')).toEqual(['binary']);
    expect(wsProtocols('a,b')).toEqual(['binary']);
    expect(wsProtocols('tök')).toEqual(['binary']);
  });
  it('uses wss under https, on the same host', () => {
    expect(wsURL({ protocol: 'https:', host: 'h:7443' }, '/v1/x')).toBe('wss://h:7443/v1/x');
    expect(wsURL({ protocol: 'http:', host: 'h' }, '/v1/x')).toBe('ws://h/v1/x');
  });
  it('names the console of a VM in its project', () => {
    expect(consolePath('shop', 'web-1', 'serial')).toBe('/v1/vms/web-1/console?type=serial&project=shop');
    expect(consolePath('a b', 'x', 'vnc')).toBe('/v1/vms/x/console?type=vnc&project=a%20b');
  });
});
