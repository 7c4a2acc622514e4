import { useEffect, useMemo, useRef, useState } from 'react';
import { listAll, type VM } from '../api';
import { useEvents } from '../events';
import { useSession } from '../session';
import { Link, navigate, useLocation } from '../router';
import { State } from '../ui';
import { emptyQuery, filterVMs, inventory, providerOf, type VMQuery } from '../lib/vmfilter';
import { fromSearch, toSearch } from '../lib/urlstate';
import { visibleWindow } from '../lib/vwindow';

const rowHeight = 34;
const states = ['running', 'stopped', 'paused', 'pending', 'starting', 'stopping', 'error', 'unknown'];

export function VMs() {
  const s = useSession();
  const { search } = useLocation();
  const query = fromSearch<VMQuery & Record<string, string>>(search, { ...emptyQuery, all: '' });
  const [vms, setVMs] = useState<VM[]>([]);
  const [scroll, setScroll] = useState(0);
  const [height, setHeight] = useState(600);
  const box = useRef<HTMLDivElement>(null);
  const all = query.all === '1';

  // VMs deleted while the list was loading: the event may beat the list.
  const gone = useRef(new Set<string>());
  useEffect(() => {
    const params = all ? { 'all-projects': true } : { project: s.project };
    const load = () => {
      gone.current.clear();
      listAll<VM>('/v1/vms', params).then((l) => setVMs(l.filter((v) => !gone.current.has(`${v.project}/${v.name}`))), () => {});
    };
    load();
    // The event stream keeps the list current; a slow refresh heals a
    // stream that was down for a while.
    const t = setInterval(load, 30_000);
    return () => clearInterval(t);
  }, [s.project, all]);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  useEvents((e) => {
    const v = e.vm;
    if (!v || (!all && v.project !== s.project)) return;
    const same = (x: VM) => x.name === v.name && x.project === v.project;
    if (e.action === 'deleted') gone.current.add(`${v.project}/${v.name}`);
    setVMs((vs) => (e.action === 'deleted' ? vs.filter((x) => !same(x)) : [...vs.filter((x) => !same(x)), v]));
  });

  const set = (patch: Partial<VMQuery & { all: string }>) => navigate('/vms' + toSearch({ ...query, ...patch }, { ...emptyQuery, all: '' }), true);
  const rows = useMemo(() => filterVMs(vms, query), [vms, query.q, query.state, query.host, query.provider, query.label, query.sort]);
  const win = visibleWindow(rows.length, rowHeight, scroll, height);
  const sortBy = (col: string) => set({ sort: query.sort === col ? `-${col}` : col });
  const th = (col: string, label: string) => (
    <th aria-sort={query.sort === col ? 'ascending' : query.sort === `-${col}` ? 'descending' : 'none'}>
      <button className="link" onClick={() => sortBy(col)}>
        {label}
      </button>
    </th>
  );
  const t = inventory(vms);

  return (
    <div className="vms">
      <aside className="tree card" aria-label="Inventory">
        <h2>Inventory</h2>
        <ul>
          {[...t.entries()].map(([p, places]) => (
            <li key={p}>
              <button className="link" onClick={() => set({ provider: p, host: '' })}>
                {p === 'polyvisor' ? 'Polyvisor hosts' : `Provider ${p}`}
              </button>
              {[...places.entries()].map(([place, hosts]) => (
                <ul key={place}>
                  {place && <li className="muted">{place}</li>}
                  {[...hosts.entries()].map(([h, hv]) => (
                    <li key={h} className={place ? 'nested' : ''}>
                      <button className="link" onClick={() => set({ provider: p, host: h })}>
                        {h}
                      </button>{' '}
                      <span className="muted">({hv.length})</span>
                      <ul>
                        {hv.slice(0, 50).map((vm) => (
                          <li key={`${vm.project}/${vm.name}`}>
                            <Link to={`/vms/${encodeURIComponent(vm.project ?? 'default')}/${encodeURIComponent(vm.name)}`}>{vm.name}</Link>
                          </li>
                        ))}
                        {hv.length > 50 && <li className="muted">and {hv.length - 50} more</li>}
                      </ul>
                    </li>
                  ))}
                </ul>
              ))}
            </li>
          ))}
        </ul>
      </aside>
      <section className="list">
        <div className="row">
          <h1>Virtual machines</h1>
          <div className="spacer" />
          {s.can('create') && (
            <Link to="/create" className="button primary" data-testid="create-vm-button">
              Create VM
            </Link>
          )}
        </div>
        <div className="row filters">
          <input data-testid="vm-search" aria-label="Search" placeholder="Search name, label, IP" value={query.q} onChange={(e) => set({ q: e.target.value })} />
          <select data-testid="vm-filter-state" aria-label="State" value={query.state} onChange={(e) => set({ state: e.target.value })}>
            <option value="">any state</option>
            {states.map((x) => (
              <option key={x}>{x}</option>
            ))}
          </select>
          <input aria-label="Host" placeholder="host" value={query.host} onChange={(e) => set({ host: e.target.value })} />
          <input aria-label="Provider" placeholder="provider" value={query.provider} onChange={(e) => set({ provider: e.target.value })} />
          <input aria-label="Label" placeholder="label k=v" value={query.label} onChange={(e) => set({ label: e.target.value })} />
          <label className="inline">
            <input type="checkbox" checked={all} onChange={(e) => set({ all: e.target.checked ? '1' : '' })} /> all projects
          </label>
          <span className="muted">
            {rows.length} of {vms.length}
          </span>
        </div>
        <div className="scroller" ref={box} onScroll={(e) => setScroll(e.currentTarget.scrollTop)}>
          <table data-testid="vm-table" className="vmtable">
            <thead>
              <tr>
                {th('name', 'Name')}
                {all && th('project', 'Project')}
                {th('state', 'State')}
                {th('host', 'Host')}
                {th('provider', 'Provider')}
                {th('vcpus', 'vCPUs')}
                {th('memory', 'Memory')}
                <th>IPs</th>
              </tr>
            </thead>
            <tbody>
              {win.padTop > 0 && <tr style={{ height: win.padTop }} aria-hidden="true" />}
              {rows.slice(win.start, win.end).map((vm) => {
                const to = `/vms/${encodeURIComponent(vm.project ?? 'default')}/${encodeURIComponent(vm.name)}`;
                return (
                  <tr key={`${vm.project}/${vm.name}`} data-testid={`vm-row-${vm.name}`} style={{ height: rowHeight }} onClick={() => navigate(to)}>
                    <td>
                      <Link to={to}>{vm.name}</Link>
                    </td>
                    {all && <td>{vm.project}</td>}
                    <td>
                      <State s={vm.status.powerState} />
                    </td>
                    <td>{vm.spec.host}</td>
                    <td>{providerOf(vm)}</td>
                    <td>{vm.spec.vcpus}</td>
                    <td>{vm.spec.memoryMiB} MiB</td>
                    <td>{vm.status.ips?.join(', ')}</td>
                  </tr>
                );
              })}
              {win.padBottom > 0 && <tr style={{ height: win.padBottom }} aria-hidden="true" />}
            </tbody>
          </table>
        </div>
      </section>
    </div>
  );
}
