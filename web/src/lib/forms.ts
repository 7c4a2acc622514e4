// Placing the API's field errors beside the inputs of a form: each input
// answers for an API field and what lies under it ("quota" for
// "quota.vcpus", "disks" for "disks[0].image").
import { APIError, fieldId } from './errors';

export interface PlacedError {
  field: string; // the form's input that shows it
  testId: string; // "error-" + the API field, as the create wizard names it
  message: string;
}

// placeError finds, among a form's fields, the one the API's error names
// (the longest that matches), or gives undefined when the error belongs in
// the form's general error box.
export function placeError(err: unknown, fields: readonly string[]): PlacedError | undefined {
  if (!(err instanceof APIError) || !err.field) return undefined;
  const f = err.field;
  let best: string | undefined;
  for (const x of fields) {
    if (f === x || f.startsWith(x + '.') || f.startsWith(x + '[')) {
      if (!best || x.length > best.length) best = x;
    }
  }
  if (!best) return undefined;
  return { field: best, testId: `error-${fieldId(f)}`, message: err.body.message };
}

// num reads a number field: blank is undefined (no value, "unlimited"),
// anything else the number typed (NaN is sent as typed text, for the API
// to name).
export function optionalNumber(s: string): number | undefined {
  const t = s.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : undefined;
}
