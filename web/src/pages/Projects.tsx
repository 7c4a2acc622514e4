import { useState, type FormEvent } from 'react';
import { call, listAll, type Project } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Link, navigate } from '../router';
import { ErrorBox } from '../ui';
import { Field, FormError, useForm } from '../form';
import { describePermission } from '../lib/roles';
import { mib } from '../lib/units';

export const projectPath = (name: string) => `/projects/${encodeURIComponent(name)}`;
const byName = (p: Project) => p.name;

function CreateProject({ onCreated }: { onCreated(p: Project): void }) {
  const form = useForm(['name', 'description', 'labels', 'quota', 'maxLeaseSeconds', 'leaseGraceSeconds']);
  const [name, setName] = useState('');
  const [desc, setDesc] = useState('');
  async function submit(e: FormEvent) {
    e.preventDefault();
    await form.run(async () => {
      onCreated(await call<Project>('POST', '/v1/projects', { name: name.trim(), description: desc.trim() || undefined }));
    });
  }
  return (
    <form ref={form.box} className="card wizard" onSubmit={submit} aria-labelledby="newproj-h" noValidate>
      <h2 id="newproj-h">Create a project</h2>
      <FormError form={form} testId="project-create-error" />
      <Field form={form} name="name" label="Name" idPrefix="np" help="Lowercase letters, digits and '-'.">
        {(a) => <input {...a} data-testid="project-name" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" spellCheck={false} />}
      </Field>
      <Field form={form} name="description" label="Description" idPrefix="np">
        {(a) => <input {...a} data-testid="project-description" value={desc} onChange={(e) => setDesc(e.target.value)} />}
      </Field>
      <div className="row end">
        <button type="submit" className="primary" data-testid="project-submit" disabled={form.busy}>
          Create
        </button>
      </div>
    </form>
  );
}

// Roles shows what each project role may do, as the API defines it.
export function Roles() {
  const s = useSession();
  return (
    <section className="card" aria-labelledby="roles-h" data-testid="roles">
      <h2 id="roles-h">Roles</h2>
      <p className="muted small">From least to most: each role may do what the ones before it may, and what its row adds. Superadmins may do everything, everywhere.</p>
      <table className="compact">
        <tbody>
          {s.policy.names.map((r) => (
            <tr key={r} data-testid={`role-${r}`}>
              <th scope="row">{r}</th>
              <td className="wrap">
                {s.policy
                  .added(r)
                  .map((p) => describePermission(p))
                  .join(', ')}
                <div className="muted small mono">{s.policy.added(r).join(' ')}</div>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function Projects() {
  const s = useSession();
  // No project events exist: the list is read again now and then.
  const live = useLiveList<Project>((sig) => listAll<Project>('/v1/projects', {}, sig), () => undefined, byName, [], 30_000);
  const rows = [...live.items].sort((a, b) => a.name.localeCompare(b.name));
  return (
    <div>
      <div className="row">
        <h1>Projects</h1>
        <span className="muted">{s.superadmin ? 'all of them' : 'those you belong to'}</span>
      </div>
      <ErrorBox err={live.error} />
      <div className="tablewrap">
        <table data-testid="projects-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Description</th>
              <th scope="col">Your role</th>
              <th scope="col">Members</th>
              <th scope="col">VMs</th>
              <th scope="col">vCPUs</th>
              <th scope="col">Memory</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((p) => {
              const u = p.status?.usage ?? {};
              return (
                <tr key={p.name} data-testid={`project-row-${p.name}`}>
                  <td>
                    <Link to={projectPath(p.name)}>{p.name}</Link>
                  </td>
                  <td className="wrap">{p.spec.description}</td>
                  <td>{s.role(p.name) || (s.superadmin ? 'superadmin' : '')}</td>
                  <td className="num">{Object.keys(p.spec.members ?? {}).length}</td>
                  <td className="num">{u.vms ?? 0}</td>
                  <td className="num">{u.vcpus ?? 0}</td>
                  <td className="num">{mib(u.memoryMiB ?? 0)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {s.superadmin && (
        <CreateProject
          onCreated={(p) => {
            s.reload();
            navigate(projectPath(p.name));
          }}
        />
      )}
      <Roles />
    </div>
  );
}
