// The hosts, kept current: the event stream carries hosts as stored,
// without the allocation and capacity the server adds when it answers, so
// an event shows at once what it says (state, heartbeat, accelerator)
// over the allocation last read, and the list is read again shortly after
// (also when VMs come or go, which moves the allocation).
import { useEffect, useRef } from 'react';
import { listAll, type Host } from './api';
import { useEvents } from './events';
import { useLiveList, type LiveList } from './live';
import { carryServerView } from './lib/capacity';

const byName = (h: Host) => h.name;

export function useHosts(): LiveList<Host> {
  const shown = useRef<Host[]>([]);
  const live = useLiveList<Host>(
    (sig) => listAll<Host>('/v1/hosts', {}, sig),
    (e) => (e.host ? carryServerView(shown.current.find((h) => h.name === e.host!.name), e.host) : undefined),
    byName,
    [],
    60_000,
  );
  shown.current = live.items;
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEvents((e) => {
    if (e.type === 'host' || (e.type === 'vm' && e.action !== 'updated')) {
      clearTimeout(timer.current);
      timer.current = setTimeout(live.reload, 1000);
    }
  });
  useEffect(() => () => clearTimeout(timer.current), []);
  return live;
}
