// The console's view of the Polyvisor API: fetch with the session's token,
// the one error shape, paged lists and the event stream.
import { APIError } from './lib/errors';
import { LineSplitter } from './lib/ndjson';

const tokenKey = 'polyvisor.token';

export function getToken(): string {
  return sessionStorage.getItem(tokenKey) ?? '';
}

export function setToken(t: string) {
  if (t) sessionStorage.setItem(tokenKey, t);
  else sessionStorage.removeItem(tokenKey);
}

// onUnauthorized is called when the API refuses the token.
export let onUnauthorized: () => void = () => {};
export function setOnUnauthorized(f: () => void) {
  onUnauthorized = f;
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const t = getToken();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
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
      code: 'http_' + resp.status,
      message: text || resp.statusText,
    };
    if (resp.status === 401 && !path.startsWith('/v1/login')) onUnauthorized();
    throw new APIError(resp.status, e);
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
export async function listAll<T>(path: string, params: Record<string, string | boolean | undefined> = {}): Promise<T[]> {
  const out: T[] = [];
  let cont = '';
  for (;;) {
    const page = await call<{ items: T[]; continue?: string }>('GET', path + q({ ...params, limit: '1000', continue: cont }));
    out.push(...(page.items ?? []));
    if (!page.continue || page.continue === cont) return out;
    cont = page.continue;
  }
}

export interface Meta {
  name: string;
  project?: string;
  uid: string;
  labels?: Record<string, string>;
  version: number;
  createdAt: string;
}

export interface VM extends Meta {
  spec: {
    host: string;
    vcpus: number;
    memoryMiB: number;
    powerState: string;
    disks?: { name: string; image?: string; sizeMiB?: number }[];
    nics?: { network: string; mac?: string }[];
    boot?: { kernel?: string; initrd?: string; cmdline?: string };
    provider?: { name: string; id?: string };
    lease?: { expiresAt: string; deleteAt: string; stoppedAt?: string };
    deletion?: unknown;
  };
  status: { powerState: string; ips?: string[]; pid?: number; reason?: string; driver?: string; startedAt?: string; error?: { message: string } };
}

export interface Host extends Meta {
  provider?: { name: string };
  status: { state: string; cpus: number; memoryMiB: number; accel: string; allocated: { vcpus: number; memoryMiB: number; vms: number } };
}

export interface Operation {
  id: string;
  kind: string;
  target: { kind: string; name: string; project?: string };
  status: string;
  progress: number;
  message?: string;
  error?: { message: string };
  createdAt: string;
  finishedAt?: string;
}

export interface Image extends Meta {
  kind: string;
  state: string;
  public?: boolean;
  virtualSizeBytes?: number;
}

export interface Provider extends Meta {
  spec: { type: string };
  status: { state: string; message?: string };
}

export interface WhoAmI {
  kind: string;
  name: string;
  superadmin?: boolean;
  roles?: Record<string, string>;
}

export interface Project extends Meta {
  spec: { description?: string };
}

export interface AuditRecord {
  id: string;
  time: string;
  actor: { kind: string; name?: string; token?: string };
  remote?: string;
  requestId?: string;
  method?: string;
  path?: string;
  action: string;
  project?: string;
  resource?: { kind: string; name: string };
  operationId?: string;
  outcome: string;
  status?: number;
  message?: string;
}

export interface Event {
  type: string;
  action: string;
  object: { kind: string; name: string; project?: string };
  vm?: VM;
  host?: Host;
  operation?: Operation;
  provider?: Provider;
}

// streamEvents follows /v1/events until the signal aborts, reconnecting
// with backoff.
export async function streamEvents(signal: AbortSignal, onEvent: (e: Event) => void) {
  let delay = 500;
  while (!signal.aborted) {
    try {
      const resp = await fetch('/v1/events?types=vm,host,operation,provider', {
        headers: { Authorization: `Bearer ${getToken()}` },
        signal,
      });
      if (resp.status === 401) {
        onUnauthorized();
        return;
      }
      if (!resp.ok || !resp.body) throw new Error(`events: ${resp.status}`);
      delay = 500;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      const split = new LineSplitter();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const line of split.push(value)) onEvent(JSON.parse(line) as Event);
      }
    } catch {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}
