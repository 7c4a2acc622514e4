// A view's state in its URL's query, so views can be bookmarked.
type Strings<T> = { [K in keyof T]: string };

// toSearch writes the fields that differ from the defaults, in the
// defaults' order, so one state always has one URL. A field emptied where
// its default is not is written empty ("since="), so it stays empty.
export function toSearch<T extends Strings<T>>(state: T, defaults: T): string {
  const p = new URLSearchParams();
  for (const k of Object.keys(defaults) as (keyof T & string)[]) {
    const v = state[k];
    if (v !== undefined && v !== defaults[k]) p.set(k, v);
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

// fromSearch reads the fields the defaults name, ignoring any other.
export function fromSearch<T extends Strings<T>>(search: string, defaults: T): T {
  const p = new URLSearchParams(search);
  const out = { ...defaults };
  for (const k of Object.keys(defaults) as (keyof T & string)[]) {
    const v = p.get(k);
    if (v !== null) out[k] = v as T[typeof k];
  }
  return out;
}
