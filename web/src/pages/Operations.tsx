import { useEffect, useState } from 'react';
import { call, listAll, type Operation } from '../api';
import { useEvents } from '../events';
import { useSession } from '../session';
import { ErrorBox, State, ago } from '../ui';

export function Operations() {
  const s = useSession();
  const [ops, setOps] = useState<Operation[]>([]);
  const [err, setErr] = useState<unknown>();
  useEffect(() => {
    listAll<Operation>('/v1/operations', { 'all-projects': true }).then((o) => setOps(o.sort((a, b) => b.createdAt.localeCompare(a.createdAt))), setErr);
  }, []);
  useEvents((e) => {
    const o = e.operation;
    if (o) setOps((os) => [o, ...os.filter((x) => x.id !== o.id)].sort((a, b) => b.createdAt.localeCompare(a.createdAt)));
  });
  return (
    <div>
      <h1>Operations</h1>
      <ErrorBox err={err} />
      <table data-testid="ops-table">
        <thead>
          <tr>
            <th>Kind</th>
            <th>Target</th>
            <th>Status</th>
            <th>Progress</th>
            <th>Message</th>
            <th>Created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {ops.map((o) => (
            <tr key={o.id}>
              <td>{o.kind}</td>
              <td>
                {o.target.project ? `${o.target.project}/` : ''}
                {o.target.name}
              </td>
              <td>
                <State s={o.status} />
              </td>
              <td>
                <progress max={100} value={o.progress} aria-label={`${o.kind} progress`} /> {o.progress}%
              </td>
              <td>{o.error?.message ?? o.message}</td>
              <td className="muted">{ago(o.createdAt)}</td>
              <td>
                {o.status === 'pending' && s.can('power', o.target.project) && (
                  <button onClick={() => call('DELETE', `/v1/operations/${o.id}`).catch(setErr)}>Cancel</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
