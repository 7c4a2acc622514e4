// Storage pools: superadmins define them and grant them to projects.
import { useCallback, useEffect, useState } from 'react';
import { call, listAll, type Pool } from '../api';
import { useSession } from '../session';
import { ErrorBox } from '../ui';
import { mib } from '../lib/units';

export function Pools() {
  const s = useSession();
  const [pools, setPools] = useState<Pool[]>();
  const [err, setErr] = useState<unknown>();
  const [form, setForm] = useState({ name: '', kind: 'dir', path: '', hosts: '', projects: '', address: '', images: false });
  const load = useCallback(() => {
    listAll<Pool>('/v1/pools').then(setPools, setErr);
  }, []);
  useEffect(load, [load]);
  const list = (v: string) =>
    v
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
  return (
    <div>
      <h1>Storage pools</h1>
      <ErrorBox err={err} testId="pools-error" />
      <div className="tablewrap">
        <table data-testid="pool-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">Path</th>
              <th scope="col">Hosts (free of total)</th>
              <th scope="col">Projects</th>
            </tr>
          </thead>
          <tbody>
            {(pools ?? []).map((p) => (
              <tr key={p.name}>
                <td>{p.name}</td>
                <td>{p.spec.kind}</td>
                <td>
                  <code>{p.spec.path}</code>
                </td>
                <td>
                  {p.spec.hosts.map((h) => {
                    const st = p.status.hosts?.find((x) => x.host === h);
                    return (
                      <div key={h}>
                        {h}: {st ? (st.error ? st.error : `${mib(st.freeMiB)} of ${mib(st.totalMiB)}`) : 'not reported'}
                      </div>
                    );
                  })}
                </td>
                <td>{(p.spec.projects ?? []).join(', ') || '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {s.superadmin && (
        <form
          className="row"
          data-testid="pool-create"
          onSubmit={(e) => {
            e.preventDefault();
            setErr(undefined);
            const body: Record<string, unknown> = { name: form.name.trim(), kind: form.kind, path: form.path.trim(), hosts: list(form.hosts), projects: list(form.projects) };
            if (form.kind === 'nbd') body.address = form.address.trim();
            if (form.kind === 'shared' && form.images) body.images = true;
            call('POST', '/v1/pools', body).then(load, setErr);
          }}
        >
          <label className="inline">
            Name <input value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} />
          </label>
          <label className="inline">
            Kind{' '}
            <select value={form.kind} onChange={(e) => setForm({ ...form, kind: e.target.value })}>
              <option value="dir">dir (one host)</option>
              <option value="shared">shared (every host sees the path)</option>
              <option value="nbd">nbd (served from the first host to all)</option>
            </select>
          </label>
          {form.kind === 'shared' && (
            <label className="inline">
              <input type="checkbox" checked={form.images} onChange={(e) => setForm({ ...form, images: e.target.checked })} /> keep the hosts' images here
            </label>
          )}
          {form.kind === 'nbd' && (
            <label className="inline">
              Address <input value={form.address} placeholder="10.0.0.5:10809" onChange={(e) => setForm({ ...form, address: e.target.value })} />
            </label>
          )}
          <label className="inline">
            Path <input value={form.path} onChange={(e) => setForm({ ...form, path: e.target.value })} />
          </label>
          <label className="inline">
            Hosts <input value={form.hosts} placeholder="node1, node2" onChange={(e) => setForm({ ...form, hosts: e.target.value })} />
          </label>
          <label className="inline">
            Projects <input value={form.projects} placeholder="default" onChange={(e) => setForm({ ...form, projects: e.target.value })} />
          </label>
          <button type="submit" disabled={!form.name.trim() || !form.path.trim()}>
            Define pool
          </button>
        </form>
      )}
    </div>
  );
}
