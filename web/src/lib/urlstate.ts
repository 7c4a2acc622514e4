// A view's state in its URL's query, so views can be bookmarked.
export function toSearch<T extends Record<string, string>>(state: T, defaults: T): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) {
    if (v !== '' && v !== defaults[k]) p.set(k, v);
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

export function fromSearch<T extends Record<string, string>>(search: string, defaults: T): T {
  const p = new URLSearchParams(search);
  const out: Record<string, string> = { ...defaults };
  for (const k of Object.keys(defaults)) {
    const v = p.get(k);
    if (v !== null) out[k] = v;
  }
  return out as T;
}
