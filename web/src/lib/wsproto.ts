// Browsers cannot set Authorization on a websocket: the token travels as a
// subprotocol the server reads, beside the "binary" the consoles speak.
export function wsProtocols(token: string): string[] {
  return token ? ['binary', `bearer.${token}`] : ['binary'];
}

export function wsURL(loc: { protocol: string; host: string }, path: string): string {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}${path}`;
}
