import { describe, expect, it } from 'vitest';
import { bytes, duration, mib } from './units';

describe('mib', () => {
  it('shows MiB below a GiB, GiB above', () => {
    expect(mib(256)).toBe('256 MiB');
    expect(mib(1024)).toBe('1 GiB');
    expect(mib(1536)).toBe('1.5 GiB');
    expect(mib(24105)).toBe('23.5 GiB');
    expect(mib(512 * 1024)).toBe('512 GiB');
  });
});

describe('bytes', () => {
  it('shows byte counts in binary units', () => {
    expect(bytes(512)).toBe('512 B');
    expect(bytes(1 << 20)).toBe('1 MiB');
    expect(bytes(3.5 * (1 << 30))).toBe('3.5 GiB');
    expect(bytes(300 * (1 << 20))).toBe('300 MiB');
    expect(bytes(undefined)).toBe('');
  });
});

describe('duration', () => {
  it('uses the largest whole unit', () => {
    expect(duration(86400)).toBe('1 day');
    expect(duration(7 * 86400)).toBe('7 days');
    expect(duration(5400)).toBe('90 minutes');
    expect(duration(61)).toBe('61 seconds');
  });
});
