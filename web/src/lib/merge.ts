// Keeping a loaded list current from the event stream. Objects carry the
// store's version: an older copy never replaces a newer one, whichever
// arrives last (a list answer computed before an event can land after it).
export interface Keyed {
  name: string;
  project?: string;
}

export interface Versioned {
  version?: number;
}

export function keyOf(o: Keyed): string {
  return `${o.project ?? ''}/${o.name}`;
}

// newer tells whether b should replace a.
export function newer(a: Versioned | undefined, b: Versioned): boolean {
  return a === undefined || a.version === undefined || b.version === undefined || b.version >= a.version;
}

// applyChange puts a created or updated object in place of its old self
// (appended when new), or drops it when it was deleted. The list is not
// re-sorted: views sort what they show.
export function applyChange<T extends Versioned>(list: T[], action: string, obj: T, key: (x: T) => string): T[] {
  const k = key(obj);
  const i = list.findIndex((x) => key(x) === k);
  if (action === 'deleted') return i < 0 ? list : [...list.slice(0, i), ...list.slice(i + 1)];
  if (i < 0) return [...list, obj];
  if (!newer(list[i], obj)) return list;
  const out = list.slice();
  out[i] = obj;
  return out;
}

export interface Change<T> {
  action: string;
  obj: T;
}

// reconcile applies to a freshly loaded list the changes streamed while
// it loaded: those newer than what the list holds win, and a deletion
// removes what the list still shows of the deleted object.
export function reconcile<T extends Versioned>(loaded: T[], during: Change<T>[], key: (x: T) => string): T[] {
  let out = loaded;
  for (const c of during) {
    const k = key(c.obj);
    const cur = out.find((x) => key(x) === k);
    if (c.action === 'deleted') {
      if (cur && newer(cur, c.obj)) out = out.filter((x) => key(x) !== k);
    } else if (!cur || newer(cur, c.obj)) {
      out = applyChange(out, c.action, c.obj, key);
    }
  }
  return out;
}
