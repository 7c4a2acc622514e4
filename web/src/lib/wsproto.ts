// Browsers cannot set Authorization on a websocket: the token travels as a
// subprotocol the server reads, beside the "binary" the consoles speak.

// A subprotocol must be an HTTP token; anything else would make the
// WebSocket constructor throw, so such a token is not offered at all.
const tokenChars = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function wsProtocols(token: string): string[] {
  const t = token.trim();
  return t && tokenChars.test(t) ? ['binary', `bearer.${t}`] : ['binary'];
}

export function wsURL(loc: { protocol: string; host: string }, path: string): string {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}${path}`;
}

export function consolePath(project: string, name: string, type: 'serial' | 'vnc'): string {
  return `/v1/vms/${encodeURIComponent(name)}/console?type=${type}&project=${encodeURIComponent(project)}`;
}
