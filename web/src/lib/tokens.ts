// API tokens: the create form's body, and what a token may do in words.
export interface TokenForm {
  name: string;
  project: string; // "" for every project of the user
  role: string; // "" for the user's own role
  expiresInSeconds: string; // "" or "0" for never
  current?: string; // the user's password, asked again when signed in with it
}

export const emptyToken: TokenForm = { name: '', project: '', role: '', expiresInSeconds: '', current: '' };

export function tokenBody(f: TokenForm): Record<string, unknown> {
  const body: Record<string, unknown> = { name: f.name.trim() };
  if (f.project) body.project = f.project;
  if (f.role) body.role = f.role;
  const e = Number(f.expiresInSeconds);
  if (f.expiresInSeconds && Number.isFinite(e) && e > 0) body.expiresInSeconds = e;
  if (f.current) body.current = f.current;
  return body;
}

export interface TokenLike {
  kind: string;
  project?: string;
  role?: string;
}

// tokenScope says how far a token reaches.
export function tokenScope(t: TokenLike): string {
  if (t.project && t.role) return `${t.role} in ${t.project} only`;
  if (t.project) return `its user's role in ${t.project} only`;
  if (t.role) return `at most ${t.role}`;
  return "everything its user may do";
}

// narrowed tells whether a session acts with a narrowed token, which the
// API keeps out of account changes (passwords, tokens).
export function narrowed(me: { project?: string; role?: string } | undefined): boolean {
  return !!(me?.project || me?.role);
}
