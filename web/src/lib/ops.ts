// Operations: which are done, which may be cancelled, newest first.
export interface Op {
  id: string;
  kind: string;
  status: string;
  progress: number;
  createdAt: string;
  finishedAt?: string;
  target: { kind: string; name: string; project?: string };
  error?: { message: string };
}

export const opStatuses = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];

export function isDone(o: { status: string }): boolean {
  return o.status === 'succeeded' || o.status === 'failed' || o.status === 'cancelled';
}

// An operation still waiting for its turn can be cancelled, and so can a
// running migration (the VM stays on its source).
export function cancellable(o: { status: string; kind?: string }): boolean {
  return o.status === 'pending' || (o.status === 'running' && o.kind === 'vm.migrate');
}

export function newestFirst<T extends { createdAt: string; id: string }>(ops: T[]): T[] {
  return [...ops].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id));
}

export function filterOps<T extends Op>(ops: T[], f: { status: string; kind: string; q: string }): T[] {
  const q = f.q.toLowerCase();
  return newestFirst(
    ops.filter(
      (o) =>
        (!f.status || o.status === f.status) &&
        (!f.kind || o.kind === f.kind || (f.kind.endsWith('.') && o.kind.startsWith(f.kind))) &&
        (!q || o.target.name.toLowerCase().includes(q) || (o.target.project ?? '').toLowerCase().includes(q) || o.id.includes(q)),
    ),
  );
}

// targetLink is where an operation's object is shown, when the console
// has a page for it.
export function targetLink(o: Op): string | undefined {
  if (o.target.kind !== 'vm' || !o.target.project) return undefined;
  return `/vms/${encodeURIComponent(o.target.project)}/${encodeURIComponent(o.target.name)}`;
}
