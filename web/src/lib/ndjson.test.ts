import { describe, expect, it } from 'vitest';
import { LineSplitter } from './ndjson';

describe('LineSplitter', () => {
  it('joins lines split across chunks and drops blank ones', () => {
    const s = new LineSplitter();
    expect(s.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(s.push(':2}\n\n{"c":3')).toEqual(['{"b":2}']);
    expect(s.push('}\n')).toEqual(['{"c":3}']);
    expect(s.push('')).toEqual([]);
  });
  it('handles a line in many pieces, and many lines in one', () => {
    const s = new LineSplitter();
    const line = JSON.stringify({ type: 'vm', object: { name: 'web-1' } });
    const out: string[] = [];
    for (const ch of line) out.push(...s.push(ch));
    expect(out).toEqual([]);
    expect(s.push('\n{"x":1}\n{"y":2}\n')).toEqual([line, '{"x":1}', '{"y":2}']);
  });
  it('accepts CRLF line ends', () => {
    const s = new LineSplitter();
    expect(s.push('{"a":1}\r\n{"b":2}\r').map((l) => JSON.parse(l))).toEqual([{ a: 1 }]);
    expect(s.push('\n').map((l) => JSON.parse(l))).toEqual([{ b: 2 }]);
  });
});
