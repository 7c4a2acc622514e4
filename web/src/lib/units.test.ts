import { describe, expect, it } from 'vitest';
import { mib } from './units';

describe('mib', () => {
  it('shows MiB below a GiB, GiB above', () => {
    expect(mib(256)).toBe('256 MiB');
    expect(mib(1024)).toBe('1 GiB');
    expect(mib(1536)).toBe('1.5 GiB');
    expect(mib(24105)).toBe('23.5 GiB');
    expect(mib(512 * 1024)).toBe('512 GiB');
  });
});
