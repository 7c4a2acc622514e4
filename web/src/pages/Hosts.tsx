import { useEffect, useState } from 'react';
import type { Host } from '../api';
import { useHosts } from '../hosts';
import { Link } from '../router';
import { CapacityBar, ErrorBox, State, ago } from '../ui';
import { hostUse } from '../lib/capacity';
import { mib } from '../lib/units';

export const hostPath = (name: string) => `/hosts/${encodeURIComponent(name)}`;

// Accel shows the accelerator a host runs guests under, and why.
export function Accel({ h }: { h: Host }) {
  if (h.provider) return <span className="muted">{h.status.accel || 'as its provider runs it'}</span>;
  return (
    <span data-testid={`host-accel-${h.name}`}>
      <strong>{h.status.accel || 'unknown'}</strong>
      {h.status.accelReason && <span className="muted small accel-reason"> {h.status.accelReason}</span>}
    </span>
  );
}

export function Hosts() {
  const { items, error, loaded } = useHosts();
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 10_000);
    return () => clearInterval(t);
  }, []);
  const hosts = [...items].sort((a, b) => a.name.localeCompare(b.name));
  return (
    <div>
      <div className="row">
        <h1>Hosts</h1>
        <span className="muted" data-testid="hosts-count" data-loaded={loaded}>
          {loaded ? `${hosts.length} hosts` : 'loading…'}
        </span>
      </div>
      <p className="muted small">Allocation is shown against what the scheduler offers on each host: its CPUs times the CPU overcommit, and its memory less what is kept for the host.</p>
      <ErrorBox err={error} />
      <div className="tablewrap">
        <table data-testid="hosts-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">State</th>
              <th scope="col">Accelerator</th>
              <th scope="col">vCPUs allocated</th>
              <th scope="col">Memory allocated</th>
              <th scope="col">VMs</th>
              <th scope="col">Runs</th>
              <th scope="col">Heartbeat</th>
            </tr>
          </thead>
          <tbody>
            {hosts.map((h) => {
              const u = hostUse(h);
              return (
                <tr key={h.name} data-testid={`host-row-${h.name}`}>
                  <td>
                    <Link to={hostPath(h.name)}>{h.name}</Link>
                  </td>
                  <td>
                    <State s={h.status.state} /> {h.spec?.unschedulable && <span className="state state-paused">cordoned</span>}
                  </td>
                  <td className="wrap">
                    <Accel h={h} />
                  </td>
                  <td className="barcell">
                    <CapacityBar label="vCPUs" use={u.vcpus} />
                  </td>
                  <td className="barcell">
                    <CapacityBar label="Memory" use={u.memory} fmt={mib} />
                  </td>
                  <td className="num">
                    <Link to={`/vms?all=1&host=${encodeURIComponent(h.name)}`}>{h.status.allocated?.vms ?? 0}</Link>
                  </td>
                  <td>{h.provider ? `${h.provider.type ?? 'provider'} ${h.provider.name}` : 'Polyvisor agent'}</td>
                  <td className="muted">{h.provider ? '' : ago(h.status.lastHeartbeat, now)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
        {loaded && hosts.length === 0 && <p className="muted empty">No hosts yet: start an agent with a join token (polyvisor host join-token).</p>}
      </div>
    </div>
  );
}
