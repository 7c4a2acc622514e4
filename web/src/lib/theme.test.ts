import { describe, expect, it } from 'vitest';
import { otherTheme, pickTheme } from './theme';

describe('theme', () => {
  it('follows the system until the user chooses', () => {
    expect(pickTheme(null, true)).toBe('dark');
    expect(pickTheme(null, false)).toBe('light');
    expect(pickTheme('light', true)).toBe('light');
    expect(pickTheme('dark', false)).toBe('dark');
    expect(pickTheme('purple', true)).toBe('dark');
  });
  it('toggles', () => {
    expect(otherTheme('dark')).toBe('light');
    expect(otherTheme('light')).toBe('dark');
  });
});
