import { describe, expect, it } from 'vitest';
import { visibleWindow } from './vwindow';

describe('visibleWindow', () => {
  it('renders the rows in view plus overscan', () => {
    const w = visibleWindow(10000, 30, 3000, 600, 5);
    expect(w.start).toBe(95);
    expect(w.end).toBe(125);
    expect(w.padTop).toBe(95 * 30);
    expect(w.padBottom).toBe((10000 - 125) * 30);
  });
  it('keeps the table height whatever the window', () => {
    for (const top of [0, 1234, 29_990, 299_000]) {
      const w = visibleWindow(10000, 30, top, 700);
      expect(w.padTop + (w.end - w.start) * 30 + w.padBottom).toBe(10000 * 30);
      expect(w.end - w.start).toBeLessThanOrEqual(Math.ceil(700 / 30) + 1 + 20);
    }
  });
  it('clamps at both ends', () => {
    expect(visibleWindow(3, 30, 0, 600)).toEqual({ start: 0, end: 3, padTop: 0, padBottom: 0 });
    expect(visibleWindow(0, 30, 500, 600)).toEqual({ start: 0, end: 0, padTop: 0, padBottom: 0 });
    const w = visibleWindow(100, 30, 99999, 600, 0);
    expect(w.end).toBe(100);
    expect(w.start).toBeLessThanOrEqual(w.end);
    expect(w.padBottom).toBe(0);
  });
});
