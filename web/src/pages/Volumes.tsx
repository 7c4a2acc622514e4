// Volumes of the project: create, attach, detach, grow, snapshot, delete
// (docs/STORAGE.md). The VM page's Volumes tab shows one VM's.
import { useCallback, useEffect, useState } from 'react';
import { call, listAll, q, type Pool, type Volume } from '../api';
import { useSession } from '../session';
import { Confirm, ErrorBox, State } from '../ui';
import { mib } from '../lib/units';

const volPath = (name: string) => `/v1/volumes/${encodeURIComponent(name)}`;

// useVolumes lists the project's volumes and reloads them on demand and
// every few seconds (their hosts make them asynchronously).
export function useVolumes(project: string) {
  const [items, setItems] = useState<Volume[]>();
  const [err, setErr] = useState<unknown>();
  const load = useCallback(() => {
    listAll<Volume>('/v1/volumes', { project }).then(setItems, setErr);
  }, [project]);
  useEffect(() => {
    load();
    const t = setInterval(load, 3000);
    return () => clearInterval(t);
  }, [load]);
  return { items, err, load };
}

export function Volumes() {
  const s = useSession();
  const project = s.project;
  const { items, err, load } = useVolumes(project);
  const [pools, setPools] = useState<Pool[]>([]);
  const [actErr, setActErr] = useState<unknown>();
  const [ask, setAsk] = useState<string>();
  const [form, setForm] = useState({ name: '', pool: '', size: '1024', vm: '' });
  const canManage = s.can('volume.manage', project);
  useEffect(() => {
    listAll<Pool>('/v1/pools').then((ps) => setPools(ps.filter((p) => p.spec.projects?.includes(project))), setActErr);
  }, [project]);
  const pq = q({ project });
  const act = async (method: string, path: string, body?: unknown) => {
    setActErr(undefined);
    try {
      await call(method, path + pq, body);
      load();
    } catch (e) {
      setActErr(e);
    }
  };
  return (
    <div>
      <div className="row">
        <h1>Volumes</h1>
        <span className="muted" data-testid="volumes-count">
          {items ? `${items.length} volumes in ${project}` : 'loading…'}
        </span>
      </div>
      <ErrorBox err={err ?? actErr} testId="volumes-error" />
      <div className="tablewrap">
        <table data-testid="volume-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Pool</th>
              <th scope="col">Size</th>
              <th scope="col">State</th>
              <th scope="col">Attached to</th>
              <th scope="col">Snapshots</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(items ?? []).map((v) => (
              <tr key={v.name} data-testid={`volume-${v.name}`}>
                <td>{v.name}</td>
                <td>{v.spec.pool}</td>
                <td>{mib(v.spec.sizeMiB)}</td>
                <td>
                  <State s={v.status.state} /> {v.status.error && <span className="muted small">{v.status.error}</span>}
                </td>
                <td>{v.spec.attachedTo ?? '—'}</td>
                <td>{(v.spec.snapshots ?? []).join(', ') || '—'}</td>
                <td className="actions">
                  {canManage && !v.spec.attachedTo && (
                    <>
                      <button type="button" onClick={() => void act('POST', volPath(v.name) + '/grow', { sizeMiB: v.spec.sizeMiB * 2 })}>
                        Double size
                      </button>{' '}
                      <button type="button" onClick={() => void act('POST', volPath(v.name) + '/snapshots', { name: `s${(v.spec.snapshots?.length ?? 0) + 1}` })}>
                        Snapshot
                      </button>{' '}
                      <button type="button" className="danger" onClick={() => setAsk(v.name)}>
                        Delete
                      </button>
                    </>
                  )}
                  {canManage && v.spec.attachedTo && (
                    <button type="button" onClick={() => void act('POST', volPath(v.name) + '/detach')}>
                      Detach
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {canManage && (
        <form
          className="row"
          data-testid="volume-create"
          onSubmit={(e) => {
            e.preventDefault();
            void act('POST', '/v1/volumes', { name: form.name.trim(), pool: form.pool || pools[0]?.name, sizeMiB: Number(form.size) });
          }}
        >
          <label className="inline">
            Name <input value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} data-testid="volume-name" />
          </label>
          <label className="inline">
            Pool{' '}
            <select value={form.pool} onChange={(e) => setForm({ ...form, pool: e.target.value })}>
              {pools.map((p) => (
                <option key={p.name} value={p.name}>
                  {p.name}
                </option>
              ))}
            </select>
          </label>
          <label className="inline">
            Size (MiB) <input value={form.size} inputMode="numeric" onChange={(e) => setForm({ ...form, size: e.target.value })} />
          </label>
          <button type="submit" disabled={!form.name.trim() || pools.length === 0}>
            Create volume
          </button>
          {pools.length === 0 && <span className="muted small">No pool is granted to {project}.</span>}
        </form>
      )}
      {ask && (
        <Confirm
          title={`Delete volume ${ask}?`}
          okLabel="Delete"
          danger
          body={<p>The volume {ask}, its data and its snapshots are deleted.</p>}
          onOK={() => {
            const n = ask;
            setAsk(undefined);
            void act('DELETE', volPath(n));
          }}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </div>
  );
}

// VMVolumes is the VM page's Volumes tab: the VM's volumes, detach, and
// attach of a ready volume of the project (hot-plugged while it runs).
export function VMVolumes({ project, name, canEdit }: { project: string; name: string; canEdit: boolean }) {
  const { items, err, load } = useVolumes(project);
  const [actErr, setActErr] = useState<unknown>();
  const [pick, setPick] = useState('');
  const mine = (items ?? []).filter((v) => v.spec.attachedTo === name);
  const free = (items ?? []).filter((v) => !v.spec.attachedTo && v.status.state === 'ready');
  const act = async (path: string, body?: unknown) => {
    setActErr(undefined);
    try {
      await call('POST', path + q({ project }), body);
      load();
    } catch (e) {
      setActErr(e);
    }
  };
  return (
    <div data-testid="vm-volumes">
      <ErrorBox err={err ?? actErr} />
      {mine.length === 0 ? (
        <p className="muted">No volumes attached.</p>
      ) : (
        <table>
          <tbody>
            {mine.map((v) => (
              <tr key={v.name}>
                <td>{v.name}</td>
                <td>{mib(v.spec.sizeMiB)}</td>
                <td>
                  {canEdit && (
                    <button type="button" onClick={() => void act(volPath(v.name) + '/detach', { vm: name })}>
                      Detach
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canEdit && free.length > 0 && (
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            void act(volPath(pick || free[0].name) + '/attach', { vm: name });
          }}
        >
          <label className="inline">
            Volume{' '}
            <select value={pick} onChange={(e) => setPick(e.target.value)} data-testid="attach-pick">
              {free.map((v) => (
                <option key={v.name} value={v.name}>
                  {v.name} ({mib(v.spec.sizeMiB)})
                </option>
              ))}
            </select>
          </label>
          <button type="submit">Attach</button>
        </form>
      )}
    </div>
  );
}
