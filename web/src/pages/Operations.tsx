import { useEffect, useMemo, useState } from 'react';
import { call, listAll, type Operation } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Link, navigate, useLocation } from '../router';
import { ErrorBox, State, ago } from '../ui';
import { fromSearch, toSearch } from '../lib/urlstate';
import { cancellable, filterOps, isDone, opStatuses, targetLink } from '../lib/ops';

const defaults = { status: '', kind: '', q: '' };
const byID = (o: Operation) => o.id;
const shown = 500;

export function Operations() {
  const s = useSession();
  const { search } = useLocation();
  const f = fromSearch(search, defaults);
  const live = useLiveList<Operation>((signal) => listAll<Operation>('/v1/operations', { 'all-projects': true }, signal), (e) => e.operation, byID, []);
  const ops = live.items;
  const [actErr, setErr] = useState<unknown>();
  const err = actErr ?? live.error;
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 10_000);
    return () => clearInterval(t);
  }, []);
  const { status, kind, q } = f;
  const rows = useMemo(() => filterOps(ops, { status, kind, q }), [ops, status, kind, q]);
  const kinds = useMemo(() => [...new Set(ops.map((o) => o.kind))].sort(), [ops]);
  const set = (k: keyof typeof defaults) => (e: { target: { value: string } }) => navigate('/operations' + toSearch({ ...f, [k]: e.target.value }, defaults), true);

  async function cancel(o: Operation) {
    setErr(undefined);
    try {
      await call<Operation>('DELETE', `/v1/operations/${encodeURIComponent(o.id)}`);
      live.reload();
    } catch (x) {
      setErr(x);
    }
  }

  return (
    <div>
      <h1>Operations</h1>
      <form className="row filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label className="inline">
          Status
          <select data-testid="ops-filter-status" value={f.status} onChange={set('status')}>
            <option value="">any</option>
            {opStatuses.map((x) => (
              <option key={x} value={x}>
                {x}
              </option>
            ))}
          </select>
        </label>
        <label className="inline">
          Kind
          <select value={f.kind} onChange={set('kind')}>
            <option value="">any</option>
            {kinds.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
        </label>
        <input type="search" aria-label="Search by target or id" placeholder="target or id" value={f.q} onChange={set('q')} />
        <span className="muted">
          {rows.length > shown ? `newest ${shown} of ${rows.length}` : `${rows.length} of ${ops.length}`}
        </span>
      </form>
      <ErrorBox err={err} />
      <div className="tablewrap">
        <table data-testid="ops-table">
          <thead>
            <tr>
              <th scope="col">Operation</th>
              <th scope="col">Target</th>
              <th scope="col">Status</th>
              <th scope="col">Progress</th>
              <th scope="col">Message</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.slice(0, shown).map((o) => {
              const to = targetLink(o);
              const name = `${o.target.project ? `${o.target.project}/` : ''}${o.target.name}`;
              return (
                <tr key={o.id} data-testid={`op-row-${o.id}`}>
                  <td>
                    {o.kind}
                    <div className="muted small mono">{o.id}</div>
                  </td>
                  <td>{to ? <Link to={to}>{name}</Link> : `${o.target.kind} ${name}`}</td>
                  <td>
                    <State s={o.status} />
                  </td>
                  <td>
                    <progress max={100} value={o.progress} aria-label={`${o.kind} of ${name} progress`} /> {o.progress}%
                  </td>
                  <td className="wrap">{o.error?.message ?? o.message}</td>
                  <td className="muted" title={new Date(o.createdAt).toLocaleString()}>
                    {ago(o.createdAt, now)}
                    {isDone(o) && o.finishedAt ? <div className="small">took {Math.max(0, Math.round((Date.parse(o.finishedAt) - Date.parse(o.createdAt)) / 1000))}s</div> : null}
                  </td>
                  <td>
                    {cancellable(o) && s.can('operation.cancel', o.target.project) && (
                      <button type="button" data-testid={`op-cancel-${o.id}`} onClick={() => void cancel(o)}>
                        Cancel
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </div>
  );
}
