import { useCallback, useMemo } from 'react';
import { listAll, scope, type VM } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Link, navigate, useLocation } from '../router';
import { ErrorBox } from '../ui';
import { distinct, emptyQuery, filterVMs, providerOf, type VMQuery } from '../lib/vmfilter';
import { fromSearch, toSearch } from '../lib/urlstate';
import { keyOf } from '../lib/merge';
import { VMTree } from './VMTree';
import { VMTable } from './VMTable';

const states = ['running', 'stopped', 'paused', 'pending', 'starting', 'stopping', 'error', 'unknown', 'crashed'];
type ListQuery = VMQuery & { all: string; project: string };
const defaults: ListQuery = { ...emptyQuery, all: '', project: '' };

export function VMs() {
  const s = useSession();
  const { search } = useLocation();
  const query = fromSearch<ListQuery>(search, defaults);
  const all = query.all === '1';
  // The event stream keeps the list current; a slow refresh heals
  // anything it missed.
  const {
    items: vms,
    error: err,
    loaded,
  } = useLiveList<VM>(
    (signal) => listAll<VM>('/v1/vms', scope(s.project, all), signal),
    (e) => (e.vm && (all || e.vm.project === s.project) ? e.vm : undefined),
    keyOf,
    [s.project, all],
    60_000,
  );

  const set = useCallback(
    (patch: Partial<ListQuery>) => {
      const next = { ...fromSearch<ListQuery>(location.search, defaults), ...patch };
      next.project = next.all === '1' ? '' : s.project;
      navigate('/vms' + toSearch(next, defaults), true);
    },
    [s.project],
  );
  const { q, state, host, provider, label, sort } = query;
  const rows = useMemo(() => filterVMs(vms, { q, state, host, provider, label, sort }), [vms, q, state, host, provider, label, sort]);
  const hosts = useMemo(() => distinct(vms, (v) => v.spec.host), [vms]);
  const providers = useMemo(() => distinct(vms, providerOf), [vms]);
  const onSort = useCallback((col: string) => set({ sort: query.sort === col ? `-${col}` : col }), [set, query.sort]);
  const onPick = useCallback((provider: string, host: string) => set({ provider, host }), [set]);

  return (
    <div className="vms">
      <VMTree vms={vms} provider={query.provider} host={query.host} onPick={onPick} />
      <section className="list" aria-labelledby="vms-h">
        <div className="row">
          <h1 id="vms-h">Virtual machines</h1>
          <span className="muted">{all ? 'in all your projects' : `in ${s.project}`}</span>
          <div className="spacer" />
          {s.can('vm.create') && (
            <Link to="/create" className="button primary" data-testid="create-vm-button">
              Create VM
            </Link>
          )}
        </div>
        <form className="row filters" role="search" onSubmit={(e) => e.preventDefault()}>
          <input type="search" data-testid="vm-search" aria-label="Search by name, label or IP" placeholder="Search name, label, IP" value={query.q} onChange={(e) => set({ q: e.target.value })} />
          <label className="inline">
            State
            <select data-testid="vm-filter-state" value={query.state} onChange={(e) => set({ state: e.target.value })}>
              <option value="">any</option>
              {states.map((x) => (
                <option key={x} value={x}>
                  {x}
                </option>
              ))}
            </select>
          </label>
          <label className="inline">
            Host
            <select data-testid="vm-filter-host" value={query.host} onChange={(e) => set({ host: e.target.value })}>
              <option value="">any</option>
              {(query.host && !hosts.includes(query.host) ? [query.host, ...hosts] : hosts).map((h) => (
                <option key={h} value={h}>
                  {h}
                </option>
              ))}
            </select>
          </label>
          <label className="inline">
            Provider
            <select data-testid="vm-filter-provider" value={query.provider} onChange={(e) => set({ provider: e.target.value })}>
              <option value="">any</option>
              {(query.provider && !providers.includes(query.provider) ? [query.provider, ...providers] : providers).map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
          </label>
          <label className="inline">
            Label
            <input data-testid="vm-filter-label" placeholder="k=v" size={12} value={query.label} onChange={(e) => set({ label: e.target.value })} />
          </label>
          <label className="inline">
            <input type="checkbox" checked={all} onChange={(e) => set({ all: e.target.checked ? '1' : '' })} /> All projects
          </label>
          <span className="muted" aria-live="polite" data-testid="vm-count" data-loaded={loaded}>
            {loaded ? `${rows.length} of ${vms.length}` : 'loading…'}
          </span>
        </form>
        <ErrorBox err={err} />
        <VMTable rows={rows} sort={query.sort} showProject={all} onSort={onSort} />
      </section>
    </div>
  );
}
