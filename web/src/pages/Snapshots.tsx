import { useEffect, useState } from 'react';
import { call, q, type Operation } from '../api';
import { ErrorBox } from '../ui';

interface Snapshot {
  name: string;
  description?: string;
  createdAt?: string;
  current?: boolean;
}

export function Snapshots({ project, name, canEdit }: { project: string; name: string; canEdit: boolean }) {
  const [snaps, setSnaps] = useState<Snapshot[]>();
  const [err, setErr] = useState<unknown>();
  const [newName, setNewName] = useState('');
  const base = `/v1/vms/${encodeURIComponent(name)}/snapshots`;
  const pq = q({ project });
  const load = () =>
    call<{ items: Snapshot[] }>('GET', base + pq).then(
      (l) => setSnaps(l.items ?? []),
      (e) => setErr(e),
    );
  useEffect(() => {
    void load();
  }, [name, project]);
  const run = async (p: Promise<Operation>) => {
    setErr(undefined);
    try {
      await p;
      setTimeout(load, 1500);
    } catch (e) {
      setErr(e);
    }
  };
  return (
    <div>
      <ErrorBox err={err} />
      {snaps && snaps.length === 0 && <p className="muted">No snapshots.</p>}
      {snaps && snaps.length > 0 && (
        <table>
          <tbody>
            {snaps.map((sn) => (
              <tr key={sn.name}>
                <td>{sn.name}</td>
                <td>{sn.description}</td>
                <td>
                  {canEdit && (
                    <>
                      <button onClick={() => void run(call('POST', `${base}/${encodeURIComponent(sn.name)}/revert${pq}`))}>Revert</button>{' '}
                      <button className="danger" onClick={() => void run(call('DELETE', `${base}/${encodeURIComponent(sn.name)}${pq}`))}>
                        Delete
                      </button>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canEdit && snaps && (
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            void run(call('POST', base + pq, { name: newName }));
          }}
        >
          <label className="inline">
            New snapshot <input value={newName} onChange={(e) => setNewName(e.target.value)} />
          </label>
          <button>Take snapshot</button>
        </form>
      )}
    </div>
  );
}
