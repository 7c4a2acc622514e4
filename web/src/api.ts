// The console's view of the Polyvisor API: fetch with the session's token,
// the one error shape, paged lists and the event stream.
import { APIError } from './lib/errors';
import { LineSplitter } from './lib/ndjson';
import { eventsPath } from './lib/eventstream';
export type * from './types';
import type { Event, Host, HostDrain, Image, Operation } from './types';
import { routeSet, type RouteSet } from './lib/routes';

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
  return answer<T>(path, resp.status, resp.statusText, await resp.text(), resp.headers.get('Retry-After'));
}

// answer reads the API's answer: its JSON, or the one error shape thrown.
function answer<T>(path: string, status: number, statusText: string, text: string, retryAfter: string | null): T {
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (status < 200 || status > 299) {
    const e = (data as { error?: { code: string; message: string } } | undefined)?.error ?? {
      code: `http_${status}`,
      message: text.trim() || statusText || `HTTP ${status}`,
    };
    if (status === 401 && path !== '/v1/login') onUnauthorized();
    const ra = Number(retryAfter ?? '');
    throw new APIError(status, e, Number.isFinite(ra) && ra > 0 ? ra : undefined);
  }
  return data as T;
}

// upload sends a file as the body of a POST (an image upload) or another
// method's request, telling how much was sent as it goes; abort with signal.
export function upload<T>(path: string, file: Blob, onProgress: (sent: number, total: number) => void, signal?: AbortSignal, method = 'POST'): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(method, path);
    for (const [k, v] of Object.entries(authHeaders('application/json'))) x.setRequestHeader(k, v);
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    x.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    x.onload = () => {
      try {
        resolve(answer<T>(path, x.status, x.statusText, x.responseText, x.getResponseHeader('Retry-After')));
      } catch (e) {
        reject(e);
      }
    };
    x.onerror = () => reject(new Error('the upload failed: the connection to the server was lost'));
    x.onabort = () => reject(new DOMException('the upload was cancelled', 'AbortError'));
    signal?.addEventListener('abort', () => x.abort());
    x.send(file);
  });
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
// with backoff from the revision of the last event it got (?since=), so
// nothing is missed while the stream was down; onOpen tells each
// (re)connection and whether it resumed, so views reload only when the
// store no longer kept what they missed.
export async function streamEvents(signal: AbortSignal, onEvent: (e: Event) => void, onOpen: (n: number, resumed: boolean) => void) {
  let delay = 500;
  let opened = 0;
  let since = 0;
  while (!signal.aborted) {
    try {
      const resp = await fetch(eventsPath(since), { headers: authHeaders('application/x-ndjson'), signal });
      if (resp.status === 401) {
        onUnauthorized();
        return;
      }
      if (resp.status === 410) {
        // What was missed is no longer kept: start from now, and let the
        // views read everything again.
        since = 0;
        continue;
      }
      if (!resp.ok || !resp.body) throw new Error(`events: HTTP ${resp.status}`);
      delay = 500;
      const resumed = since > 0;
      if (!resumed) since = Number(resp.headers.get('X-Polyvisor-Revision') ?? 0) || 0;
      onOpen(opened++, resumed);
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
          if (e.revision && e.revision > since) since = e.revision;
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

// The server's routes, from its OpenAPI document, read once: controls of
// routes a server does not have are not offered.
let routesP: Promise<RouteSet | undefined> | undefined;
export function loadRoutes(): Promise<RouteSet | undefined> {
  routesP ??= fetch('/v1/openapi.json')
    .then((r) => (r.ok ? r.json() : undefined))
    .then((d) => (d ? routeSet(d) : undefined))
    .catch(() => undefined);
  return routesP;
}

// Routes of administrative actions, each used through one function below:
// should a route change, these are the places to point at the new one.
export const adminRoutes = {
  imagePublic: 'PATCH /v1/images/{name}',
  hostCordon: 'POST /v1/hosts/{name}/cordon',
  hostUncordon: 'POST /v1/hosts/{name}/uncordon',
  hostRevoke: 'POST /v1/hosts/{name}/revoke',
  hostDelete: 'DELETE /v1/hosts/{name}',
  hostDrain: 'POST /v1/hosts/{name}/drain',
} as const;

const seg = encodeURIComponent;

// setImagePublic makes an image usable by every project's VMs, or by its
// own project's only (superadmins).
export function setImagePublic(img: { name: string; project?: string }, pub: boolean): Promise<Image> {
  return call<Image>('PATCH', `/v1/images/${seg(img.name)}${q({ project: img.project })}`, { public: pub });
}

// cordonHost keeps new VMs off a host (or lets them on again); its VMs keep running.
export function cordonHost(name: string, cordon: boolean): Promise<Host> {
  return call<Host>('POST', `/v1/hosts/${seg(name)}/${cordon ? 'cordon' : 'uncordon'}`);
}

// revokeHost ends a host's credentials: its agent can no longer act for it.
export function revokeHost(name: string): Promise<Host> {
  return call<Host>('POST', `/v1/hosts/${seg(name)}/revoke`);
}

// deleteHost removes an empty host and its credentials.
export function deleteHost(name: string): Promise<void> {
  return call<void>('DELETE', `/v1/hosts/${seg(name)}`);
}

// migrateVM moves a running VM to host while it runs ('' for the
// scheduler's choice): a vm.migrate operation.
export function migrateVM(project: string, name: string, host: string): Promise<Operation> {
  return call<Operation>('POST', `/v1/vms/${seg(name)}/migrate${q({ project })}`, host ? { host } : {});
}

// drainHost cordons a host and starts a host.drain operation that moves
// its VMs away one after another; the operation's result is a HostDrain,
// updated as each move ends (drainOf).
export function drainHost(name: string): Promise<Operation> {
  return call<Operation>('POST', `/v1/hosts/${seg(name)}/drain`);
}

// drainOf is the HostDrain a host.drain operation carries.
export function drainOf(op: Operation | undefined): HostDrain | undefined {
  const r = op?.result as HostDrain | undefined;
  return r && typeof r === 'object' && typeof r.host === 'string' ? r : undefined;
}

// importImage starts an import: a file uploaded, or a URL the server fetches.
export function uploadImage(project: string, name: string, kind: string, file: File, pub: boolean, onProgress: (sent: number, total: number) => void, signal?: AbortSignal): Promise<Operation> {
  return upload<Operation>('/v1/images' + q({ project, name, kind, public: pub }), file, onProgress, signal);
}

// plan asks for a capacity plan (POST /v1/plans/{kind}) of the live
// estate, or of an RVTools workbook sent beside the request as
// multipart/form-data.
export async function plan<T>(kind: 'consolidate' | 'what-if' | 'forecast', req: object, workbook?: File, signal?: AbortSignal): Promise<T> {
  const path = `/v1/plans/${kind}`;
  if (!workbook) return call<T>('POST', path, req, signal);
  const form = new FormData();
  form.append('request', JSON.stringify(req));
  form.append('rvtools', workbook);
  const resp = await fetch(path, { method: 'POST', headers: authHeaders('application/json'), body: form, signal });
  return answer<T>(path, resp.status, resp.statusText, await resp.text(), resp.headers.get('Retry-After'));
}
