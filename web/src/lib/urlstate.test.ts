import { describe, expect, it } from 'vitest';
import { fromSearch, toSearch } from './urlstate';

describe('url state', () => {
  const d = { q: '', state: '', sort: 'name' };
  it('keeps only what differs from the defaults, and reads it back', () => {
    const s = toSearch({ q: 'web 1', state: 'running', sort: 'name' }, d);
    expect(s).toBe('?q=web+1&state=running');
    expect(fromSearch(s, d)).toEqual({ q: 'web 1', state: 'running', sort: 'name' });
    expect(toSearch(d, d)).toBe('');
  });
  it('ignores what it does not know', () => {
    expect(fromSearch('?other=1&tab=x', d)).toEqual(d);
  });
  it('writes fields in a stable order', () => {
    expect(toSearch({ sort: '-host', state: 'stopped', q: 'a&b=c' }, d)).toBe('?q=a%26b%3Dc&state=stopped&sort=-host');
    expect(fromSearch('?q=a%26b%3Dc', d).q).toBe('a&b=c');
  });
  it('keeps a field emptied whose default is not empty', () => {
    const a = { since: '24h', actor: '' };
    expect(toSearch({ since: '', actor: '' }, a)).toBe('?since=');
    expect(fromSearch('?since=', a)).toEqual({ since: '', actor: '' });
  });
});
