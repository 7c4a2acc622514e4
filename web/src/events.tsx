// One event stream for the whole app; views subscribe to it.
import { useEffect, useRef } from 'react';
import { streamEvents, type Event } from './api';

type Listener = (e: Event) => void;
const listeners = new Set<Listener>();
let running: AbortController | null = null;

function ensure() {
  if (running) return;
  running = new AbortController();
  void streamEvents(running.signal, (e) => listeners.forEach((l) => l(e)));
}

export function stopEvents() {
  running?.abort();
  running = null;
}

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
