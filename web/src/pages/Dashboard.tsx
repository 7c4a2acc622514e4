import { useEffect, useState } from 'react';
import { listAll, type Host, type Operation, type Provider, type VM } from '../api';
import { useEvents } from '../events';
import { useSession } from '../session';
import { Link } from '../router';
import { Bar, State, ago } from '../ui';
import { providerOf } from '../lib/vmfilter';

function count<T>(xs: T[], key: (x: T) => string): [string, number][] {
  const m = new Map<string, number>();
  for (const x of xs) m.set(key(x), (m.get(key(x)) ?? 0) + 1);
  return [...m.entries()].sort();
}

export function Dashboard() {
  const s = useSession();
  const [hosts, setHosts] = useState<Host[]>([]);
  const [vms, setVMs] = useState<VM[]>([]);
  const [ops, setOps] = useState<Operation[]>([]);
  const [providers, setProviders] = useState<Provider[]>([]);

  useEffect(() => {
    listAll<Host>('/v1/hosts').then(setHosts, () => {});
    listAll<VM>('/v1/vms', { 'all-projects': true }).then(setVMs, () => {});
    listAll<Operation>('/v1/operations', { 'all-projects': true }).then((o) => setOps(o.sort((a, b) => b.createdAt.localeCompare(a.createdAt))), () => {});
    listAll<Provider>('/v1/providers', { 'all-projects': true }).then(setProviders, () => {});
  }, [s.project]);

  useEvents((e) => {
    if (e.host) {
      const h = e.host;
      setHosts((hs) => (e.action === 'deleted' ? hs.filter((x) => x.name !== h.name) : [...hs.filter((x) => x.name !== h.name), h].sort((a, b) => a.name.localeCompare(b.name))));
    }
    if (e.vm) {
      const v = e.vm;
      const same = (x: VM) => x.name === v.name && x.project === v.project;
      setVMs((vs) => (e.action === 'deleted' ? vs.filter((x) => !same(x)) : [...vs.filter((x) => !same(x)), v]));
    }
    if (e.operation) {
      const o = e.operation;
      setOps((os) => [o, ...os.filter((x) => x.id !== o.id)].slice(0, 200));
    }
    if (e.provider) {
      const p = e.provider;
      setProviders((ps) => (e.action === 'deleted' ? ps.filter((x) => x.name !== p.name) : [...ps.filter((x) => x.name !== p.name), p]));
    }
  });

  const hour = Date.now() - 3600_000;
  const alerts = [
    ...providers.filter((p) => p.status.state !== 'connected').map((p) => `Provider ${p.name} is ${p.status.state}${p.status.message ? ': ' + p.status.message : ''}`),
    ...hosts.filter((h) => h.status.state !== 'ready').map((h) => `Host ${h.name} is ${h.status.state}`),
    ...ops.filter((o) => o.status === 'failed' && Date.parse(o.createdAt) > hour).map((o) => `${o.kind} of ${o.target.name} failed: ${o.error?.message ?? ''}`),
  ];

  return (
    <div data-testid="dashboard" className="dashboard">
      <h1>Dashboard</h1>
      <section aria-labelledby="alerts-h" data-testid="alerts" className="card">
        <h2 id="alerts-h">Alerts</h2>
        {alerts.length === 0 ? <p className="muted">Nothing needs attention.</p> : <ul className="alerts">{alerts.map((a, i) => <li key={i}>{a}</li>)}</ul>}
      </section>
      <section aria-labelledby="hosts-h">
        <h2 id="hosts-h">Hosts</h2>
        <div className="grid">
          {hosts.map((h) => (
            <article key={h.name} className="card" data-testid="host-card">
              <h3>
                {h.name} <State s={h.status.state} />
              </h3>
              <p className="muted">
                {h.provider ? `provider ${h.provider.name}` : `Polyvisor host, ${h.status.accel}`} · {h.status.allocated.vms} VMs
              </p>
              <Bar label="vCPUs" used={h.status.allocated.vcpus} total={h.status.cpus} unit="" />
              <Bar label="Memory" used={h.status.allocated.memoryMiB} total={h.status.memoryMiB} unit="MiB" />
            </article>
          ))}
        </div>
      </section>
      <div className="grid two">
        <section className="card" aria-labelledby="bystate-h">
          <h2 id="bystate-h">VMs by state</h2>
          <table>
            <tbody>
              {count(vms, (v) => v.status.powerState).map(([k, n]) => (
                <tr key={k}>
                  <td>
                    <Link to={`/vms?state=${k}`}>
                      <State s={k} />
                    </Link>
                  </td>
                  <td>{n}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
        <section className="card" aria-labelledby="byprov-h">
          <h2 id="byprov-h">VMs by provider</h2>
          <table>
            <tbody>
              {count(vms, (v) => providerOf(v)).map(([k, n]) => (
                <tr key={k}>
                  <td>
                    <Link to={`/vms?provider=${k}`}>{k}</Link>
                  </td>
                  <td>{n}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      </div>
      <section className="card" aria-labelledby="ops-h" data-testid="recent-ops">
        <h2 id="ops-h">Recent operations</h2>
        <table>
          <tbody>
            {ops.slice(0, 10).map((o) => (
              <tr key={o.id}>
                <td>{o.kind}</td>
                <td>
                  {o.target.project ? `${o.target.project}/` : ''}
                  {o.target.name}
                </td>
                <td>
                  <State s={o.status} /> {o.status === 'running' ? `${o.progress}%` : ''}
                </td>
                <td className="muted">{ago(o.createdAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}
