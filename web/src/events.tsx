// One event stream for the whole app; views subscribe to it.
import { useEffect, useRef } from 'react';
import { streamEvents, type Event } from './api';

type Listener = (e: Event) => void;
const listeners = new Set<Listener>();
const resyncers = new Set<() => void>();
let running: AbortController | null = null;

function ensure() {
  if (running) return;
  running = new AbortController();
  void streamEvents(
    running.signal,
    (e) => listeners.forEach((l) => l(e)),
    (n, resumed) => {
      // After a reconnection that could not resume (the store no longer
      // kept what happened meanwhile), the views read everything again.
      if (n > 0 && !resumed) resyncers.forEach((r) => r());
    },
  );
}

// stopEvents ends the stream (at sign-out: the next user gets their own).
export function stopEvents() {
  running?.abort();
  running = null;
}

// useEvents calls f for every event while the component is mounted.
export function useEvents(f: Listener) {
  const ref = useRef(f);
  ref.current = f;
  useEffect(() => {
    const l: Listener = (e) => ref.current(e);
    listeners.add(l);
    ensure();
    return () => {
      listeners.delete(l);
    };
  }, []);
}

// useResync calls f whenever the stream reconnected after a break.
export function useResync(f: () => void) {
  const ref = useRef(f);
  ref.current = f;
  useEffect(() => {
    const r = () => ref.current();
    resyncers.add(r);
    return () => {
      resyncers.delete(r);
    };
  }, []);
}
