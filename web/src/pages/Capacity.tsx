// Capacity: the consolidation plan as each host before and after, and when
// each cluster runs out (superadmins: a plan shows every project's VMs).
// The estate is the live one, or an RVTools export chosen here.
import { useState } from 'react';
import { plan } from '../api';
import type { Forecast, Plan } from '../types';
import { CapacityBar, ErrorBox } from '../ui';
import { mib } from '../lib/units';
import { fate, planHeadline, planUse, runsOut } from '../lib/plan';
import { ClusterUsage } from './UsageChart';

const cores = (n: number) => `${Math.round(n * 10) / 10} cores`;

export function Capacity() {
  const [target, setTarget] = useState('0.8');
  const [pct, setPct] = useState('95');
  const [file, setFile] = useState<File>();
  const [p, setP] = useState<Plan>();
  const [fc, setFc] = useState<Forecast>();
  const [err, setErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const run = () => {
    setErr(undefined);
    setBusy(true);
    const options = { targetUtilization: Number(target), percentile: Number(pct) };
    Promise.all([plan<Plan>('consolidate', { options }, file), plan<Forecast>('forecast', { options: { percentile: Number(pct) } }, file)])
      .then(([a, b]) => {
        setP(a);
        setFc(b);
      }, setErr)
      .finally(() => setBusy(false));
  };
  return (
    <div>
      <h1>Capacity</h1>
      <form
        className="row"
        data-testid="plan-form"
        onSubmit={(e) => {
          e.preventDefault();
          run();
        }}
      >
        <label className="inline">
          Target utilization <input type="number" min="0.05" max="1" step="0.05" value={target} onChange={(e) => setTarget(e.target.value)} />
        </label>
        <label className="inline">
          Percentile <input type="number" min="1" max="100" step="1" value={pct} onChange={(e) => setPct(e.target.value)} />
        </label>
        <label className="inline">
          RVTools export (optional) <input type="file" accept=".xlsx" data-testid="plan-rvtools" onChange={(e) => setFile(e.target.files?.[0])} />
        </label>
        <button type="submit" disabled={busy}>
          {busy ? 'Planning…' : 'Plan'}
        </button>
      </form>
      <ErrorBox err={err} testId="plan-error" />
      {p && (
        <section data-testid="plan-result">
          <h2>Consolidation {p.source === 'rvtools' ? 'of the RVTools export' : 'of the live estate'}</h2>
          {(p.warnings ?? []).map((w) => (
            <p key={w} className="muted">
              {w}
            </p>
          ))}
          <p data-testid="plan-headline">{planHeadline(p)}</p>
          <p>
            Saves {p.savings.hosts} host(s): {cores(p.savings.cpus)}, {mib(p.savings.memoryMiB)}.
          </p>
          <div className="tablewrap">
            <table data-testid="plan-hosts">
              <thead>
                <tr>
                  <th scope="col">Host</th>
                  <th scope="col">Before</th>
                  <th scope="col">After</th>
                  <th scope="col">VMs</th>
                  <th scope="col">Plan</th>
                </tr>
              </thead>
              <tbody>
                {(p.hosts ?? []).map((h) => (
                  <tr key={h.name} data-fate={fate(h)}>
                    <td>
                      {h.name}
                      {h.cluster ? <div className="muted">{h.cluster}</div> : null}
                    </td>
                    <td>
                      <CapacityBar plain label="CPU" use={planUse(h.before.cpu, h.capacity.cpu)} fmt={cores} />
                      <CapacityBar plain label="Memory" use={planUse(h.before.memoryMiB, h.capacity.memoryMiB)} fmt={mib} />
                    </td>
                    <td>
                      <CapacityBar plain label="CPU" use={planUse(h.after.cpu, h.capacity.cpu)} fmt={cores} />
                      <CapacityBar plain label="Memory" use={planUse(h.after.memoryMiB, h.capacity.memoryMiB)} fmt={mib} />
                    </td>
                    <td>
                      {h.vmsBefore} → {h.vmsAfter}
                    </td>
                    <td>{fate(h)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {(p.moves?.length ?? 0) > 0 && (
            <details>
              <summary>{p.moves!.length} move(s)</summary>
              <table data-testid="plan-moves">
                <thead>
                  <tr>
                    <th scope="col">VM</th>
                    <th scope="col">From</th>
                    <th scope="col">To</th>
                  </tr>
                </thead>
                <tbody>
                  {p.moves!.map((m) => (
                    <tr key={m.vm}>
                      <td>{m.vm}</td>
                      <td>{m.from || '—'}</td>
                      <td>{m.to}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </details>
          )}
          {(p.unplaced?.length ?? 0) > 0 && (
            <ul data-testid="plan-unplaced">
              {p.unplaced!.map((u) => (
                <li key={u.vm}>
                  {u.vm}: {u.reason}
                </li>
              ))}
            </ul>
          )}
        </section>
      )}
      {fc && (
        <section data-testid="forecast-result">
          <h2>Forecast</h2>
          <div className="tablewrap">
            <table data-testid="forecast-clusters">
              <thead>
                <tr>
                  <th scope="col">Cluster</th>
                  <th scope="col">Hosts</th>
                  <th scope="col">VMs</th>
                  <th scope="col">CPU now (per day)</th>
                  <th scope="col">Memory now (per day)</th>
                  <th scope="col">Runs out</th>
                </tr>
              </thead>
              <tbody>
                {(fc.clusters ?? []).map((c) => (
                  <tr key={c.cluster}>
                    <td>{c.cluster || '—'}</td>
                    <td>{c.hosts}</td>
                    <td>{c.vms}</td>
                    <td>
                      <CapacityBar plain label="CPU" use={planUse(c.cpu.now, c.cpu.capacity)} fmt={cores} /> {c.cpu.perDay >= 0 ? '+' : ''}
                      {Math.round(c.cpu.perDay * 100) / 100}/day
                    </td>
                    <td>
                      <CapacityBar plain label="Memory" use={planUse(c.memory.now, c.memory.capacity)} fmt={mib} /> {c.memory.perDay >= 0 ? '+' : ''}
                      {mib(c.memory.perDay)}/day
                    </td>
                    <td>{runsOut(c)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
      )}
      <ClusterUsage />
    </div>
  );
}
