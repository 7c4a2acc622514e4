// The console's view of the Polyvisor API: fetch with the session's token,
// the one error shape, paged lists and the event stream.
import { APIError } from './lib/errors';
import { LineSplitter } from './lib/ndjson';
export type * from './types';
import type { Event } from './types';

const tokenKey = 'polyvisor.token';

export function getToken(): string {
  return sessionStorage.getItem(tokenKey) ?? '';
}

export function setToken(t: string) {
  if (t) sessionStorage.setItem(tokenKey, t);
  else sessionStorage.removeItem(tokenKey);
}

// onUnauthorized is called when the API refuses the token.
let onUnauthorized: () => void = () => {};
export function setOnUnauthorized(f: () => void) {
  onUnauthorized = f;
}

function authHeaders(accept: string): Record<string, string> {
  const h: Record<string, string> = { Accept: accept };
  const t = getToken();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers = authHeaders('application/json');
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  if (resp.status === 204) return undefined as T;
  const text = await resp.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!resp.ok) {
    const e = (data as { error?: { code: string; message: string } } | undefined)?.error ?? {
      code: `http_${resp.status}`,
      message: text.trim() || resp.statusText || `HTTP ${resp.status}`,
    };
    if (resp.status === 401 && path !== '/v1/login') onUnauthorized();
    const ra = Number(resp.headers.get('Retry-After') ?? '');
    throw new APIError(resp.status, e, Number.isFinite(ra) && ra > 0 ? ra : undefined);
  }
  return data as T;
}

export function q(params: Record<string, string | number | boolean | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '' && v !== false) p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

// listAll follows continue tokens to the end.
export async function listAll<T>(path: string, params: Record<string, string | boolean | undefined> = {}, signal?: AbortSignal): Promise<T[]> {
  const out: T[] = [];
  let cont = '';
  for (;;) {
    const page = await call<{ items: T[] | null; continue?: string }>('GET', path + q({ ...params, limit: '1000', continue: cont }), undefined, signal);
    out.push(...(page.items ?? []));
    if (!page.continue || page.continue === cont) return out;
    cont = page.continue;
  }
}

// scope is ?project= for one project, or ?all-projects=true.
export function scope(project: string, all = false): Record<string, string | boolean> {
  return all ? { 'all-projects': true } : { project };
}

// streamEvents follows /v1/events until the signal aborts, reconnecting
// with backoff; onOpen tells each (re)connection, so views can reload what
// they may have missed while the stream was down.
export async function streamEvents(signal: AbortSignal, onEvent: (e: Event) => void, onOpen: (n: number) => void) {
  let delay = 500;
  let opened = 0;
  while (!signal.aborted) {
    try {
      const resp = await fetch('/v1/events?types=vm,host,operation,provider', { headers: authHeaders('application/x-ndjson'), signal });
      if (resp.status === 401) {
        onUnauthorized();
        return;
      }
      if (!resp.ok || !resp.body) throw new Error(`events: HTTP ${resp.status}`);
      delay = 500;
      onOpen(opened++);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      const split = new LineSplitter();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const line of split.push(value)) {
          let e: Event;
          try {
            e = JSON.parse(line) as Event;
          } catch {
            continue;
          }
          onEvent(e);
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, delay + Math.random() * 250));
    delay = Math.min(delay * 2, 15000);
  }
}
