import { useEffect, useState } from 'react';
import { call, q, type AuditRecord } from '../api';
import { navigate, useLocation } from '../router';
import { ErrorBox } from '../ui';
import { fromSearch, toSearch } from '../lib/urlstate';

const defaults = { since: '24h', actor: '', action: '', outcome: '' };

export function Audit() {
  const { search } = useLocation();
  const f = fromSearch(search, defaults);
  const [recs, setRecs] = useState<AuditRecord[]>([]);
  const [err, setErr] = useState<unknown>();
  useEffect(() => {
    setErr(undefined);
    call<{ items: AuditRecord[] }>('GET', '/v1/audit' + q({ 'all-projects': true, limit: 500, ...f })).then((l) => setRecs((l.items ?? []).reverse()), setErr);
  }, [search]);
  const set = (k: keyof typeof defaults) => (e: { target: { value: string } }) => navigate('/audit' + toSearch({ ...f, [k]: e.target.value }, defaults), true);
  return (
    <div>
      <h1>Audit log</h1>
      <div className="row filters">
        <label className="inline">
          Since <input value={f.since} onChange={set('since')} size={6} />
        </label>
        <label className="inline">
          Actor <input value={f.actor} onChange={set('actor')} />
        </label>
        <label className="inline">
          Action <input value={f.action} onChange={set('action')} placeholder="vm." />
        </label>
        <label className="inline">
          Outcome{' '}
          <select value={f.outcome} onChange={set('outcome')}>
            <option value="">any</option>
            <option>success</option>
            <option>failure</option>
            <option>denied</option>
          </select>
        </label>
      </div>
      <ErrorBox err={err} />
      <table data-testid="audit-table">
        <thead>
          <tr>
            <th>Time</th>
            <th>Actor</th>
            <th>Action</th>
            <th>Resource</th>
            <th>Project</th>
            <th>Outcome</th>
            <th>Status</th>
            <th>From</th>
          </tr>
        </thead>
        <tbody>
          {recs.map((r) => (
            <tr key={r.id}>
              <td>{new Date(r.time).toLocaleString()}</td>
              <td>{r.actor.name ?? r.actor.kind}</td>
              <td>{r.action}</td>
              <td>{r.resource?.name ? `${r.resource.kind}/${r.resource.name}` : ''}</td>
              <td>{r.project}</td>
              <td className={`outcome-${r.outcome}`}>{r.outcome}</td>
              <td>{r.status}</td>
              <td>{r.remote}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
