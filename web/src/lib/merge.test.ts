import { describe, expect, it } from 'vitest';
import { applyChange, keyOf, newer, reconcile } from './merge';

const a = { name: 'a', project: 'p', version: 1 };
const b = { name: 'b', project: 'p', version: 1 };
const otherA = { name: 'a', project: 'q', version: 1 };
const show = (l: { name: string; project?: string; version?: number }[]) => l.map((x) => `${x.project}/${x.name}@${x.version}`);

describe('applyChange', () => {
  it('adds, replaces in place and removes', () => {
    let l = [a, b];
    l = applyChange(l, 'created', otherA, keyOf);
    expect(l).toEqual([a, b, otherA]);
    l = applyChange(l, 'updated', { ...a, version: 2 }, keyOf);
    expect(show(l)).toEqual(['p/a@2', 'p/b@1', 'q/a@1']);
    l = applyChange(l, 'deleted', b, keyOf);
    expect(l.map(keyOf)).toEqual(['p/a', 'q/a']);
  });
  it('never goes back to an older version', () => {
    const l = [{ ...a, version: 5 }];
    expect(applyChange(l, 'updated', { ...a, version: 4 }, keyOf)).toBe(l);
    expect(show(applyChange(l, 'updated', { ...a, version: 6 }, keyOf))).toEqual(['p/a@6']);
    expect(newer({}, { version: 1 })).toBe(true);
  });
  it('leaves the list alone for a deletion it never saw', () => {
    const l = [a];
    expect(applyChange(l, 'deleted', b, keyOf)).toBe(l);
  });
  it('does not change the list it is given', () => {
    const l = [a];
    applyChange(l, 'updated', { ...a, version: 9 }, keyOf);
    expect(l[0].version).toBe(1);
  });
});

describe('reconcile', () => {
  it('keeps what was streamed while a list loaded, when it is newer', () => {
    // The list was read at version 3; "a" started running at 4 meanwhile.
    const loaded = [{ ...a, version: 3 }, b];
    const during = [
      { action: 'updated', obj: { ...a, version: 4 } },
      { action: 'updated', obj: { ...b, version: 0 } },
      { action: 'created', obj: otherA },
    ];
    expect(show(reconcile(loaded, during, keyOf))).toEqual(['p/a@4', 'p/b@1', 'q/a@1']);
  });
  it('drops what was deleted meanwhile, but not what came back since', () => {
    expect(show(reconcile([a, b], [{ action: 'deleted', obj: { ...b, version: 2 } }], keyOf))).toEqual(['p/a@1']);
    expect(show(reconcile([{ ...b, version: 7 }], [{ action: 'deleted', obj: { ...b, version: 2 } }], keyOf))).toEqual(['p/b@7']);
  });
});
