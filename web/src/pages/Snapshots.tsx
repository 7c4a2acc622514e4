import { useCallback, useEffect, useState } from 'react';
import { call, q, type Operation, type Snapshot } from '../api';
import { APIError } from '../lib/errors';
import { Confirm, ErrorBox } from '../ui';
import { OpStatus, useOperation } from '../operation';
import { isDone } from '../lib/ops';

type Ask = { kind: 'revert' | 'delete'; snap: string };

export function Snapshots({ project, name, canEdit }: { project: string; name: string; canEdit: boolean }) {
  const [snaps, setSnaps] = useState<Snapshot[]>();
  const [unsupported, setUnsupported] = useState<string>();
  const [err, setErr] = useState<unknown>();
  const [newName, setNewName] = useState('');
  const [desc, setDesc] = useState('');
  const [ask, setAsk] = useState<Ask>();
  const [started, setStarted] = useState<Operation>();
  const op = useOperation(started?.id, started);
  const base = `/v1/vms/${encodeURIComponent(name)}/snapshots`;
  const pq = q({ project });

  const load = useCallback(() => {
    call<{ items: Snapshot[] | null }>('GET', base + pq).then(
      (l) => {
        setSnaps(l.items ?? []);
        setUnsupported(undefined);
      },
      (e) => {
        // 422: this VM's driver or provider takes no snapshots.
        if (e instanceof APIError && e.status === 422) setUnsupported(e.message);
        else setErr(e);
      },
    );
  }, [base, pq]);
  useEffect(load, [load]);
  // Reload once the operation a button started is over.
  useEffect(() => {
    if (op && isDone(op)) load();
  }, [op, load]);

  const run = async (method: string, path: string, body?: unknown) => {
    setErr(undefined);
    setAsk(undefined);
    try {
      setStarted(await call<Operation>(method, path, body));
    } catch (e) {
      setErr(e);
    }
  };

  if (unsupported) {
    return (
      <div className="notice" data-testid="snapshots-unsupported">
        <p>Snapshots are not available for this VM.</p>
        <p className="muted small">{unsupported}</p>
      </div>
    );
  }
  const snapPath = (s: string) => `${base}/${encodeURIComponent(s)}`;
  return (
    <div>
      <ErrorBox err={err} />
      {op && <OpStatus op={op} />}
      {!snaps && !err && <p className="muted">Loading…</p>}
      {snaps && snaps.length === 0 && <p className="muted">No snapshots.</p>}
      {snaps && snaps.length > 0 && (
        <table data-testid="snapshot-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Description</th>
              <th scope="col">Taken</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {snaps.map((sn) => (
              <tr key={sn.name}>
                <td>
                  {sn.name} {sn.current && <span className="state">current</span>}
                </td>
                <td>{sn.description}</td>
                <td className="muted">{sn.createdAt ? new Date(sn.createdAt).toLocaleString() : ''}</td>
                <td className="actions">
                  {canEdit && (
                    <>
                      <button type="button" onClick={() => setAsk({ kind: 'revert', snap: sn.name })}>
                        Revert
                      </button>{' '}
                      <button type="button" className="danger" onClick={() => setAsk({ kind: 'delete', snap: sn.name })}>
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
          className="row snapform"
          onSubmit={(e) => {
            e.preventDefault();
            void run('POST', base + pq, { name: newName.trim(), description: desc.trim() || undefined }).then(() => {
              setNewName('');
              setDesc('');
            });
          }}
        >
          <label className="inline">
            Name <input value={newName} onChange={(e) => setNewName(e.target.value)} data-testid="snapshot-name" />
          </label>
          <label className="inline">
            Description <input value={desc} onChange={(e) => setDesc(e.target.value)} />
          </label>
          <button type="submit" disabled={!newName.trim()}>
            Take snapshot
          </button>
        </form>
      )}
      {ask && (
        <Confirm
          title={ask.kind === 'revert' ? `Revert to ${ask.snap}?` : `Delete snapshot ${ask.snap}?`}
          okLabel={ask.kind === 'revert' ? 'Revert' : 'Delete'}
          danger
          body={<p>{ask.kind === 'revert' ? `${name} goes back to how it was at ${ask.snap}; what changed since is lost.` : `The snapshot ${ask.snap} of ${name} is deleted.`}</p>}
          onOK={() => void run(ask.kind === 'revert' ? 'POST' : 'DELETE', ask.kind === 'revert' ? `${snapPath(ask.snap)}/revert${pq}` : snapPath(ask.snap) + pq)}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </div>
  );
}
