import { useEffect, useState } from 'react';
import { call, q, type AuditRecord } from '../api';
import { useSession } from '../session';
import { navigate, useLocation } from '../router';
import { ErrorBox } from '../ui';
import { fromSearch, toSearch } from '../lib/urlstate';

const defaults = { since: '24h', actor: '', action: '', outcome: '', limit: '500' };

export function Audit() {
  const s = useSession();
  const { search } = useLocation();
  const f = fromSearch(search, defaults);
  const [recs, setRecs] = useState<AuditRecord[]>();
  const [err, setErr] = useState<unknown>();
  useEffect(() => {
    if (!s.canAudit) return;
    const ctl = new AbortController();
    // Text filters apply once typing pauses.
    const t = setTimeout(() => {
      setErr(undefined);
      call<{ items: AuditRecord[] | null }>('GET', '/v1/audit' + q({ 'all-projects': true, ...fromSearch(search, defaults) }), undefined, ctl.signal).then(
        (l) => setRecs((l.items ?? []).slice().reverse()),
        (e) => !ctl.signal.aborted && setErr(e),
      );
    }, 250);
    return () => {
      clearTimeout(t);
      ctl.abort();
    };
  }, [search, s.canAudit]);
  const set = (k: keyof typeof defaults) => (e: { target: { value: string } }) => navigate('/audit' + toSearch({ ...f, [k]: e.target.value }, defaults), true);

  if (!s.canAudit) {
    return (
      <div className="card">
        <h1>Audit log</h1>
        <p>The audit log is for superadmins and project admins.</p>
      </div>
    );
  }
  return (
    <div>
      <h1>Audit log</h1>
      <form className="row filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label className="inline">
          Since
          <input data-testid="audit-since" value={f.since} onChange={set('since')} size={8} placeholder="24h" title="A duration back from now (1h, 7d is 168h) or an RFC 3339 time" />
        </label>
        <label className="inline">
          Actor
          <input data-testid="audit-actor" value={f.actor} onChange={set('actor')} size={12} />
        </label>
        <label className="inline">
          Action
          <input data-testid="audit-action" value={f.action} onChange={set('action')} placeholder="vm. or vm.start" size={14} />
        </label>
        <label className="inline">
          Outcome
          <select data-testid="audit-outcome" value={f.outcome} onChange={set('outcome')}>
            <option value="">any</option>
            <option value="success">success</option>
            <option value="failure">failure</option>
            <option value="denied">denied</option>
          </select>
        </label>
        <label className="inline">
          At most
          <select value={f.limit} onChange={set('limit')}>
            {['100', '500', '2000', '10000'].map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <span className="muted">{recs ? `${recs.length} records, newest first` : 'loading…'}</span>
      </form>
      <ErrorBox err={err} />
      <div className="tablewrap">
        <table data-testid="audit-table">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Resource</th>
              <th scope="col">Project</th>
              <th scope="col">Outcome</th>
              <th scope="col">Status</th>
              <th scope="col">Request</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {(recs ?? []).map((r) => (
              <tr key={r.id}>
                <td title={r.time}>{new Date(r.time).toLocaleString()}</td>
                <td>
                  {r.actor.name ?? ''} <span className="muted">{r.actor.kind}</span>
                </td>
                <td>{r.action}</td>
                <td>{r.resource?.name ? `${r.resource.kind}/${r.resource.name}` : ''}</td>
                <td>{r.project}</td>
                <td className={`outcome-${r.outcome}`}>{r.outcome}</td>
                <td>{r.status}</td>
                <td className="muted small" title={r.requestId}>
                  {r.method} {r.path}
                  <div>{r.remote}</div>
                </td>
                <td className="wrap">{r.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
