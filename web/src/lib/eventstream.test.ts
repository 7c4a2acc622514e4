import { describe, expect, it } from 'vitest';
import spec from '../../../api/openapi.json?raw';
import { eventsPath } from './eventstream';

// The event types the API documents (Event.type in api/openapi.json,
// which a server test holds to the types the server publishes).
const documented: string[] = JSON.parse(spec).components.schemas.Event.properties.type.enum;

// follows reads ?types= as the server does: absent or empty, every type.
function follows(path: string, type: string): boolean {
  const t = new URL(path, 'https://console.example').searchParams.get('types');
  return !t || t.split(',').map((s) => s.trim()).includes(type);
}

describe('eventsPath', () => {
  it('follows every event type the API documents, migrations among them', () => {
    expect(documented).toContain('migration');
    expect(documented.length).toBeGreaterThan(5);
    for (const since of [0, 42]) {
      expect(documented.filter((t) => !follows(eventsPath(since), t))).toEqual([]);
    }
  });
  it('resumes after the last revision it got, and from now without one', () => {
    expect(new URL(eventsPath(42), 'https://console.example').searchParams.get('since')).toBe('42');
    expect(new URL(eventsPath(0), 'https://console.example').searchParams.has('since')).toBe(false);
  });
});
