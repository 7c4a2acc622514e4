// Following one operation to its end: a long poll of the API, sped up by
// the event stream.
import { useEffect, useState } from 'react';
import { call, type Operation } from './api';
import { useEvents } from './events';
import { isDone } from './lib/ops';
import { newer } from './lib/merge';
import { State } from './ui';

export function useOperation(id: string | undefined, first?: Operation): Operation | undefined {
  const [op, setOp] = useState<Operation | undefined>(first?.id === id ? first : undefined);
  useEffect(() => {
    if (!id) {
      setOp(undefined);
      return;
    }
    const ctl = new AbortController();
    (async () => {
      let wait = '';
      let failures = 0;
      while (!ctl.signal.aborted) {
        try {
          const o = await call<Operation>('GET', `/v1/operations/${encodeURIComponent(id)}${wait}`, undefined, ctl.signal);
          setOp((cur) => (cur && cur.id === o.id && !newer(cur, o) ? cur : o));
          failures = 0;
          if (isDone(o)) return;
          wait = '?wait=30s';
        } catch {
          if (ctl.signal.aborted || ++failures > 5) return;
          await new Promise((r) => setTimeout(r, 1000 * failures));
        }
      }
    })();
    return () => ctl.abort();
  }, [id]);
  useEvents((e) => {
    const o = e.operation;
    if (o && o.id === id) setOp((cur) => (cur && !newer(cur, o) ? cur : o));
  });
  return op;
}

// OpStatus tells how an operation is doing, live.
export function OpStatus({ op }: { op: Operation }) {
  const target = `${op.target.name}`;
  return (
    <div className={`opstatus card status-${op.status}`} role="status" aria-live="polite" data-testid="op-status">
      <strong>{op.kind}</strong> of {target}: <State s={op.status} />{' '}
      {!isDone(op) && <progress max={100} value={op.progress} aria-label={`${op.kind} progress`} />} {op.progress}%
      {op.message && <span className="muted"> · {op.message}</span>}
      {op.error && <div className="error">{op.error.message}</div>}
    </div>
  );
}
