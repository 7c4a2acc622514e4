import { describe, expect, it } from 'vitest';
import { leaseText, span } from './lease';

describe('lease countdown', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  const l = { expiresAt: '2026-01-03T00:00:00Z', deleteAt: '2026-01-04T00:00:00Z' };
  it('counts down to expiry, then to deletion', () => {
    expect(leaseText(l, now)).toBe('expires in 2d 0h, deleted 1d 0h later');
    expect(leaseText(l, Date.parse('2026-01-02T23:58:30Z'))).toBe('expires in 1m 30s, deleted 1d 0h later');
    expect(leaseText(l, Date.parse('2026-01-03T12:00:00Z'))).toBe('expired; deleted in 12h 00m');
    expect(leaseText({ ...l, stoppedAt: '2026-01-03T00:00:01Z' }, Date.parse('2026-01-03T12:00:00Z'))).toBe('expired and stopped; deleted in 12h 00m');
    expect(leaseText(l, Date.parse('2026-01-05T00:00:00Z'))).toBe('expired; being deleted');
    expect(leaseText(undefined, now)).toBe('no lease');
  });
  it('writes durations with their two largest units', () => {
    expect(span(0)).toBe('0s');
    expect(span(-5000)).toBe('0s');
    expect(span(59_999)).toBe('59s');
    expect(span(61_000)).toBe('1m 01s');
    expect(span(3_600_000 + 5 * 60_000)).toBe('1h 05m');
    expect(span(3 * 86_400_000 + 7 * 3_600_000 + 59 * 60_000)).toBe('3d 7h');
  });
});
