import { useState, type FormEvent } from 'react';
import { call, listAll, scope, type Provider } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Link } from '../router';
import { ErrorBox, State, ago } from '../ui';
import { Field, FormError, useForm } from '../form';
import { keyOf } from '../lib/merge';

export const providerPath = (name: string) => `/providers/${encodeURIComponent(name)}`;

const blank = { name: '', type: 'libvirt', url: 'qemu:///system', username: '', password: '', caCert: '', insecure: false, project: '' };

// AddProvider connects an estate; the server verifies the connection
// before it stores anything. The password goes to the server once and is
// never shown again (the API does not return it).
function AddProvider({ projects, project, onAdded }: { projects: string[]; project: string; onAdded(p: Provider): void }) {
  const form = useForm(['name', 'type', 'url', 'username', 'password', 'caCert', 'insecure', 'project']);
  const [f, setF] = useState({ ...blank, project });
  const set = (k: keyof typeof blank) => (e: { target: { value: string } }) => setF((cur) => ({ ...cur, [k]: e.target.value }));
  const vsphere = f.type === 'vsphere';
  async function submit(e: FormEvent) {
    e.preventDefault();
    const ok = await form.run(async () => {
      const body = {
        name: f.name.trim(),
        type: f.type,
        url: f.url.trim(),
        username: f.username.trim() || undefined,
        password: f.password || undefined,
        caCert: f.caCert.trim() || undefined,
        insecure: f.insecure || undefined,
        project: f.project || undefined,
      };
      onAdded(await call<Provider>('POST', '/v1/providers', body));
    });
    // Whatever the answer, the password does not stay in the page.
    setF((cur) => ({ ...(ok ? { ...blank, project } : cur), password: '' }));
  }
  return (
    <form ref={form.box} className="card wizard" onSubmit={submit} aria-labelledby="addprov-h" noValidate>
      <h2 id="addprov-h">Add a provider</h2>
      <p className="muted small">Polyvisor connects to an existing vCenter, ESXi or libvirt host and shows its hosts and VMs beside its own. The connection is tried before anything is stored.</p>
      <FormError form={form} testId="provider-error" />
      <Field form={form} name="type" label="Type" idPrefix="prov">
        {(a) => (
          <select
            {...a}
            data-testid="provider-type"
            value={f.type}
            onChange={(e) => setF((cur) => ({ ...cur, type: e.target.value, url: e.target.value === 'libvirt' ? 'qemu:///system' : 'https://vcenter.example.com/sdk' }))}
          >
            <option value="libvirt">libvirt</option>
            <option value="vsphere">vSphere (vCenter or ESXi)</option>
          </select>
        )}
      </Field>
      <Field form={form} name="name" label="Name" idPrefix="prov">
        {(a) => <input {...a} data-testid="provider-name" value={f.name} onChange={set('name')} autoComplete="off" spellCheck={false} />}
      </Field>
      <Field form={form} name="url" label="URL" idPrefix="prov" help={vsphere ? 'https://vcenter.example.com/sdk' : 'a libvirt URI: qemu:///system, qemu+tcp://host/system'}>
        {(a) => <input {...a} data-testid="provider-url" value={f.url} onChange={set('url')} spellCheck={false} />}
      </Field>
      <Field form={form} name="username" label="User name" idPrefix="prov">
        {(a) => <input {...a} data-testid="provider-username" value={f.username} onChange={set('username')} autoComplete="off" />}
      </Field>
      <Field form={form} name="password" label="Password" idPrefix="prov" help="Stored encrypted on the server and never shown again.">
        {(a) => <input {...a} data-testid="provider-password" type="password" value={f.password} onChange={set('password')} autoComplete="new-password" />}
      </Field>
      {vsphere && (
        <>
          <Field form={form} name="caCert" label="CA certificate (PEM)" idPrefix="prov">
            {(a) => <textarea {...a} rows={3} value={f.caCert} onChange={set('caCert')} spellCheck={false} placeholder="-----BEGIN CERTIFICATE-----" />}
          </Field>
          <Field form={form} name="insecure" label="Skip certificate checks" idPrefix="prov">
            {(a) => <input {...a} type="checkbox" checked={f.insecure} onChange={(e) => setF((cur) => ({ ...cur, insecure: e.target.checked }))} />}
          </Field>
        </>
      )}
      <Field form={form} name="project" label="Project" idPrefix="prov" help="Its VMs belong to this project; its members may use it.">
        {(a) => (
          <select {...a} data-testid="provider-project" value={f.project} onChange={set('project')}>
            {projects.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        )}
      </Field>
      <div className="row end">
        <button type="submit" className="primary" data-testid="provider-submit" disabled={form.busy}>
          {form.busy ? 'Connecting…' : 'Add provider'}
        </button>
      </div>
    </form>
  );
}

export function Providers() {
  const s = useSession();
  const all = s.superadmin;
  const live = useLiveList<Provider>(
    (sig) => listAll<Provider>('/v1/providers', scope(s.project, all), sig),
    (e) => (e.provider && (all || e.provider.project === s.project) ? e.provider : undefined),
    keyOf,
    [s.project, all],
    60_000,
  );
  const [added, setAdded] = useState<Provider>();
  const rows = [...live.items].sort((a, b) => a.name.localeCompare(b.name));
  return (
    <div>
      <div className="row">
        <h1>Providers</h1>
        <span className="muted">{all ? 'of every project' : `of ${s.project}`}</span>
        <span className="muted" data-testid="providers-count" data-loaded={live.loaded}>
          {live.loaded ? `${rows.length} providers` : 'loading…'}
        </span>
      </div>
      <ErrorBox err={live.error} />
      {added && (
        <p role="status" className="card">
          Provider <Link to={providerPath(added.name)}>{added.name}</Link> was added; its inventory syncs now.
        </p>
      )}
      <div className="tablewrap">
        <table data-testid="providers-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Type</th>
              <th scope="col">State</th>
              <th scope="col">URL</th>
              <th scope="col">Project</th>
              <th scope="col">Hosts</th>
              <th scope="col">VMs</th>
              <th scope="col">Last sync</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((p) => (
              <tr key={p.name} data-testid={`provider-row-${p.name}`}>
                <td>
                  <Link to={providerPath(p.name)}>{p.name}</Link>
                </td>
                <td>{p.spec.type}</td>
                <td className="wrap">
                  <State s={p.status.state} /> {p.status.stale && <span className="muted">(inventory stale)</span>}
                  {p.status.message && <div className="muted small">{p.status.message}</div>}
                </td>
                <td className="mono">{p.spec.url}</td>
                <td>{p.project}</td>
                <td className="num">{p.status.inventory?.hosts ?? 0}</td>
                <td className="num">{p.status.inventory?.vms ?? 0}</td>
                <td className="muted">{ago(p.status.lastSync)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {live.loaded && rows.length === 0 && <p className="muted empty">No providers.</p>}
      </div>
      {s.superadmin ? (
        <AddProvider
          projects={s.projects}
          project={s.project}
          onAdded={(p) => {
            setAdded(p);
            live.reload();
          }}
        />
      ) : (
        <p className="muted">Superadmins add and remove providers.</p>
      )}
    </div>
  );
}
