import { useEffect, useState } from 'react';
import { listAll, type Host, type Operation, type Provider, type VM } from '../api';
import { useLiveList } from '../live';
import { Link } from '../router';
import { CapacityBar, ErrorBox, State, ago } from '../ui';
import { useHosts } from '../hosts';
import { hostUse } from '../lib/capacity';
import { providerOf } from '../lib/vmfilter';
import { alerts, countBy } from '../lib/alerts';
import { keyOf } from '../lib/merge';
import { newestFirst, targetLink } from '../lib/ops';
import { mib } from '../lib/units';

const byID = (x: { id: string }) => x.id;

function HostCard({ h }: { h: Host }) {
  const u = hostUse(h);
  return (
    <article className="card host" data-testid="host-card" aria-label={`Host ${h.name}`}>
      <h3>
        <Link to={`/hosts/${encodeURIComponent(h.name)}`}>{h.name}</Link> <State s={h.status.state} />
      </h3>
      <p className="muted">
        {h.provider ? `${h.provider.type ?? 'provider'} ${h.provider.name}` : 'Polyvisor host'} · {h.status.allocated?.vms ?? 0} VMs
        {h.spec?.unschedulable ? ' · unschedulable' : ''}
      </p>
      {!h.provider && (
        <p className="small" data-testid="host-accel">
          <strong>{h.status.accel || 'no accelerator reported'}</strong>
          {h.status.accelReason && <span className="muted"> · {h.status.accelReason}</span>}
        </p>
      )}
      <CapacityBar label="vCPUs" use={u.vcpus} testId="host-vcpus" />
      <CapacityBar label="Memory" use={u.memory} fmt={mib} testId="host-memory" />
      {h.status.lastHeartbeat && <p className="muted small">heartbeat {ago(h.status.lastHeartbeat)}</p>}
    </article>
  );
}

function Counts({ title, rows, link }: { title: string; rows: [string, number][]; link: (k: string) => string }) {
  return (
    <section className="card" aria-label={title}>
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <p className="muted">No VMs.</p>
      ) : (
        <table className="compact">
          <tbody>
            {rows.map(([k, n]) => (
              <tr key={k}>
                <td>
                  <Link to={link(k)}>{k}</Link>
                </td>
                <td className="num">{n}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function Dashboard() {
  const all = { 'all-projects': true };
  const hostList = useHosts();
  const vmList = useLiveList<VM>((sig) => listAll<VM>('/v1/vms', all, sig), (e) => e.vm, keyOf, []);
  const opList = useLiveList<Operation>((sig) => listAll<Operation>('/v1/operations', all, sig), (e) => e.operation, byID, []);
  const provList = useLiveList<Provider>((sig) => listAll<Provider>('/v1/providers', all, sig), (e) => e.provider, keyOf, []);
  const [hosts, vms, ops, providers] = [hostList.items, vmList.items, opList.items, provList.items];
  const err = hostList.error ?? vmList.error;
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 15_000);
    return () => clearInterval(t);
  }, []);

  const list = alerts({ providers, hosts, ops }, now);
  const recent = newestFirst(ops).slice(0, 10);
  const sortedHosts = [...hosts].sort((a, b) => a.name.localeCompare(b.name));

  return (
    <div data-testid="dashboard" className="dashboard">
      <h1>Dashboard</h1>
      <ErrorBox err={err} />
      <section aria-labelledby="alerts-h" data-testid="alerts" className="card">
        <h2 id="alerts-h">Alerts</h2>
        {list.length === 0 ? (
          <p className="muted">Nothing needs attention.</p>
        ) : (
          <ul className="alerts">
            {list.map((a) => (
              <li key={a.key} className={`alert-${a.level}`}>
                {a.text}
              </li>
            ))}
          </ul>
        )}
      </section>
      <section aria-labelledby="hosts-h">
        <h2 id="hosts-h">Hosts</h2>
        {sortedHosts.length === 0 && <p className="muted">No hosts yet.</p>}
        <div className="grid">
          {sortedHosts.map((h) => (
            <HostCard key={h.name} h={h} />
          ))}
        </div>
      </section>
      <div className="grid two">
        <Counts title="VMs by state" rows={countBy(vms, (v) => v.status.powerState || 'unknown')} link={(k) => `/vms?all=1&state=${encodeURIComponent(k)}`} />
        <Counts title="VMs by provider" rows={countBy(vms, providerOf)} link={(k) => `/vms?all=1&provider=${encodeURIComponent(k)}`} />
      </div>
      <section className="card" aria-labelledby="ops-h" data-testid="recent-ops">
        <h2 id="ops-h">Recent operations</h2>
        {recent.length === 0 ? (
          <p className="muted">No operations yet.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Operation</th>
                <th scope="col">Target</th>
                <th scope="col">Status</th>
                <th scope="col">Started</th>
              </tr>
            </thead>
            <tbody>
              {recent.map((o) => {
                const to = targetLink(o);
                const name = `${o.target.project ? `${o.target.project}/` : ''}${o.target.name}`;
                return (
                  <tr key={o.id}>
                    <td>{o.kind}</td>
                    <td>{to ? <Link to={to}>{name}</Link> : name}</td>
                    <td>
                      <State s={o.status} /> {o.status === 'running' || o.status === 'pending' ? <progress max={100} value={o.progress} aria-label={`${o.kind} progress`} /> : null}
                      {o.status === 'failed' && o.error ? <span className="muted"> {o.error.message}</span> : null}
                    </td>
                    <td className="muted">{ago(o.createdAt, now)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </section>
      <p className="muted small">
        <Link to="/operations">All operations</Link> · <Link to="/vms?all=1">All VMs</Link>
      </p>
    </div>
  );
}
