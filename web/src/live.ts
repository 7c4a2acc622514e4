// A list loaded from the API and kept current by the event stream.
import { useCallback, useEffect, useRef, useState } from 'react';
import type { Event } from './api';
import { useEvents, useResync } from './events';
import { applyChange, reconcile, type Change, type Versioned } from './lib/merge';

export interface LiveList<T> {
  items: T[];
  error: unknown;
  loaded: boolean;
  reload(): void;
}

// useLiveList loads with load (again when deps change, when the stream
// reconnects, and every refreshMs if given) and applies the objects pick
// finds in events. Changes streamed while a load is under way are applied
// to its answer too, so an answer older than an event cannot undo it.
export function useLiveList<T extends Versioned>(
  load: (signal: AbortSignal) => Promise<T[]>,
  pick: (e: Event) => T | undefined,
  key: (x: T) => string,
  deps: unknown[],
  refreshMs = 0,
): LiveList<T> {
  const [items, setItems] = useState<T[]>([]);
  const [error, setError] = useState<unknown>();
  const [loaded, setLoaded] = useState(false);
  const during = useRef<Change<T>[] | null>(null);
  const loadRef = useRef(load);
  loadRef.current = load;
  const ctl = useRef<AbortController | null>(null);

  const reload = useCallback(() => {
    ctl.current?.abort();
    const c = new AbortController();
    ctl.current = c;
    during.current = [];
    loadRef.current(c.signal).then(
      (l) => {
        if (c.signal.aborted) return;
        const changes = during.current ?? [];
        during.current = null;
        setItems(reconcile(l, changes, key));
        setError(undefined);
        setLoaded(true);
      },
      (e) => {
        if (c.signal.aborted) return;
        during.current = null;
        setError(e);
        setLoaded(true);
      },
    );
    // key is expected to be stable (a module-level function).
  }, []);

  useEffect(() => {
    setItems([]);
    setLoaded(false);
    reload();
    const t = refreshMs > 0 ? setInterval(reload, refreshMs) : undefined;
    return () => {
      clearInterval(t);
      ctl.current?.abort();
    };
  }, deps);
  useResync(reload);
  useEvents((e) => {
    const obj = pick(e);
    if (!obj) return;
    during.current?.push({ action: e.action, obj });
    setItems((l) => applyChange(l, e.action, obj, key));
  });
  return { items, error, loaded, reload };
}
