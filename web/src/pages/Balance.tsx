// Balancing (DRS): the balancer's mode and tuning, what its last cycle saw
// (each host's load), and the moves it recommends, each with its reason
// and gain and a button that carries it out (superadmins: the balancer
// sees every host and moves every project's VMs).
import { useCallback, useEffect, useState } from 'react';
import { call } from '../api';
import type { Operation } from '../types';
import { ErrorBox, ago } from '../ui';

// The API's balance types (api/balance.go).
interface BalanceSettings {
  mode: 'off' | 'advise' | 'automatic';
  aggressiveness?: number;
  maxMoves?: number;
  intervalSeconds?: number;
  cooldownSeconds?: number;
  hotspotThreshold?: number;
  powerSaving?: boolean;
}
interface BalanceLoad {
  cpu: number;
  memory: number;
}
interface BalanceMove {
  id: string;
  vm: string;
  from: string;
  to: string;
  kind: string;
  reason: string;
  gain: number;
  demandSource: string;
  fromBefore: BalanceLoad;
  fromAfter: BalanceLoad;
  toBefore: BalanceLoad;
  toAfter: BalanceLoad;
  operation?: string;
}
interface BalanceHost {
  name: string;
  load: BalanceLoad;
  vms: number;
  excluded?: string;
}
interface BalanceCycle {
  at: string;
  mode: string;
  imbalance: number;
  imbalanceAfter: number;
  measured: number;
  vms: number;
  hosts?: BalanceHost[];
  started?: string[];
  notes?: string[];
}
interface Balance {
  settings: BalanceSettings;
  lastCycle?: BalanceCycle;
  recommendations: BalanceMove[];
}

const pct = (f: number) => `${Math.round(f * 100)}%`;
const load = (l: BalanceLoad) => `CPU ${pct(l.cpu)}, memory ${pct(l.memory)}`;

export function Balance() {
  const [b, setB] = useState<Balance>();
  const [form, setForm] = useState<BalanceSettings>();
  const [err, setErr] = useState<unknown>();
  const [applied, setApplied] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const load0 = useCallback(
    (signal?: AbortSignal) =>
      call<Balance>('GET', '/v1/balance', undefined, signal).then((x) => {
        setB(x);
        setForm((f) => f ?? x.settings);
      }, setErr),
    [],
  );
  useEffect(() => {
    const ac = new AbortController();
    load0(ac.signal);
    const t = setInterval(() => load0(ac.signal), 3000);
    return () => {
      ac.abort();
      clearInterval(t);
    };
  }, [load0]);
  const save = () => {
    if (!form) return;
    setErr(undefined);
    setBusy(true);
    call<Balance>('PUT', '/v1/balance', form)
      .then((x) => {
        setB(x);
        setForm(x.settings);
      }, setErr)
      .finally(() => setBusy(false));
  };
  const apply = (m: BalanceMove) => {
    setErr(undefined);
    call<Operation>('POST', `/v1/balance/recommendations/${encodeURIComponent(m.id)}/apply`).then(
      (op) => setApplied((a) => ({ ...a, [m.id]: op.id })),
      setErr,
    );
  };
  const num = (k: keyof BalanceSettings) => (e: React.ChangeEvent<HTMLInputElement>) => setForm((f) => f && { ...f, [k]: Number(e.target.value) });
  const c = b?.lastCycle;
  return (
    <div>
      <h1>Balancing</h1>
      <p className="muted">
        Live migrations that remove hotspots and even out the load of Polyvisor&apos;s hosts. <em>Advise</em> keeps recommendations to apply here; <em>automatic</em> carries them out.
      </p>
      {form && (
        <form
          className="row"
          data-testid="balance-form"
          onSubmit={(e) => {
            e.preventDefault();
            save();
          }}
        >
          <label className="inline">
            Mode{' '}
            <select data-testid="balance-mode" value={form.mode} onChange={(e) => setForm({ ...form, mode: e.target.value as BalanceSettings['mode'] })}>
              <option value="off">off</option>
              <option value="advise">advise</option>
              <option value="automatic">automatic</option>
            </select>
          </label>
          <label className="inline">
            Aggressiveness <input type="number" min="1" max="5" value={form.aggressiveness ?? 3} onChange={num('aggressiveness')} />
          </label>
          <label className="inline">
            Moves per cycle <input type="number" min="1" max="64" value={form.maxMoves ?? 4} onChange={num('maxMoves')} />
          </label>
          <label className="inline">
            Interval (s) <input type="number" min="1" value={form.intervalSeconds ?? 300} onChange={num('intervalSeconds')} />
          </label>
          <label className="inline">
            <input type="checkbox" checked={!!form.powerSaving} onChange={(e) => setForm({ ...form, powerSaving: e.target.checked })} /> Power saving
          </label>
          <button type="submit" data-testid="balance-save" disabled={busy}>
            {busy ? 'Saving…' : 'Save'}
          </button>
        </form>
      )}
      <ErrorBox err={err} testId="balance-error" />
      {b && (
        <section>
          <h2>Last cycle</h2>
          {c ? (
            <>
              <p data-testid="balance-cycle">
                {ago(c.at)} in mode {c.mode}: spread of host load {pct(c.imbalance)} → {pct(c.imbalanceAfter)}; demand measured for {c.measured} of {c.vms} VMs
                {c.started?.length ? `; ${c.started.length} migration(s) started` : ''}.
              </p>
              {(c.notes ?? []).map((n) => (
                <p key={n} className="muted">
                  {n}
                </p>
              ))}
              {(c.hosts?.length ?? 0) > 0 && (
                <div className="tablewrap">
                  <table data-testid="balance-hosts">
                    <thead>
                      <tr>
                        <th scope="col">Host</th>
                        <th scope="col">CPU</th>
                        <th scope="col">Memory</th>
                        <th scope="col">VMs</th>
                        <th scope="col">Excluded</th>
                      </tr>
                    </thead>
                    <tbody>
                      {c.hosts!.map((h) => (
                        <tr key={h.name}>
                          <td>{h.name}</td>
                          <td>{pct(h.load.cpu)}</td>
                          <td>{pct(h.load.memory)}</td>
                          <td>{h.vms}</td>
                          <td className="muted">{h.excluded ?? ''}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
            </>
          ) : (
            <p className="muted">No cycle has run yet.</p>
          )}
          <h2>Recommendations</h2>
          {b.recommendations.length === 0 ? (
            <p data-testid="balance-none" className="muted">
              {b.settings.mode === 'off' ? 'The balancer is off.' : 'Nothing to move.'}
            </p>
          ) : (
            <div className="tablewrap">
              <table data-testid="balance-recs">
                <thead>
                  <tr>
                    <th scope="col">VM</th>
                    <th scope="col">Move</th>
                    <th scope="col">Kind</th>
                    <th scope="col">Why</th>
                    <th scope="col">Gain</th>
                    <th scope="col" />
                  </tr>
                </thead>
                <tbody>
                  {b.recommendations.map((m) => {
                    const op = m.operation ?? applied[m.id];
                    return (
                      <tr key={m.id} data-testid={`balance-rec-${m.id}`}>
                        <td>{m.vm}</td>
                        <td>
                          {m.from} ({load(m.fromBefore)}) → {m.to} ({load(m.toAfter)})
                        </td>
                        <td>{m.kind}</td>
                        <td>{m.reason}</td>
                        <td>{m.gain.toFixed(3)}</td>
                        <td>
                          {op ? (
                            <span className="muted">operation {op}</span>
                          ) : (
                            <button type="button" data-testid={`balance-apply-${m.id}`} onClick={() => apply(m)}>
                              Apply
                            </button>
                          )}
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )}
        </section>
      )}
    </div>
  );
}
