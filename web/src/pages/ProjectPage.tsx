import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { call, listAll, type Member, type Project, type QuotaReport, type User } from '../api';
import { useSession } from '../session';
import { Link, navigate } from '../router';
import { CapacityBar, Confirm, ErrorBox } from '../ui';
import { Field, FormError, useForm } from '../form';
import { APIError } from '../lib/errors';
import { quotaBody, quotaForm, quotaRows, type QuotaForm } from '../lib/quota';
import { duration, mib } from '../lib/units';
import { level, percent } from '../lib/capacity';

const seg = encodeURIComponent;

function Members({ project, canManage, onChange }: { project: string; canManage: boolean; onChange(): void }) {
  const s = useSession();
  const [members, setMembers] = useState<Member[]>();
  const [users, setUsers] = useState<string[]>([]);
  const [err, setErr] = useState<unknown>();
  const [user, setUser] = useState('');
  const [role, setRole] = useState('');
  const [ask, setAsk] = useState<string>();
  const form = useForm(['user', 'role']);
  const base = `/v1/projects/${seg(project)}/members`;
  const load = useCallback(() => {
    call<{ items: Member[] | null }>('GET', base).then((l) => setMembers((l.items ?? []).sort((a, b) => a.user.localeCompare(b.user))), setErr);
  }, [base]);
  useEffect(load, [load]);
  useEffect(() => {
    if (s.superadmin) listAll<User>('/v1/users').then((l) => setUsers(l.map((u) => u.name).sort()), () => {});
  }, [s.superadmin]);
  useEffect(() => {
    if (!role && s.policy.names.length) setRole(s.policy.names[0]);
  }, [role, s.policy.names]);

  const put = (u: string, r: string) =>
    form.run(async () => {
      if (!u.trim()) throw new APIError(400, { code: 'invalid', field: 'user', message: 'name the user to add' });
      await call('PUT', `${base}/${seg(u.trim())}`, { role: r });
      load();
      onChange();
    });
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (await put(user, role)) setUser('');
  }
  const remove = async (u: string) => {
    setAsk(undefined);
    await form.run(async () => {
      await call('DELETE', `${base}/${seg(u)}`);
      load();
      onChange();
    });
  };
  return (
    <section className="card" aria-labelledby="members-h">
      <h2 id="members-h">Members</h2>
      <ErrorBox err={err} />
      <FormError form={form} testId="member-error" />
      {members && members.length === 0 && <p className="muted">No members yet.</p>}
      {members && members.length > 0 && (
        <table className="compact" data-testid="members-table">
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col">Role</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {members.map((m) => (
              <tr key={m.user} data-testid={`member-row-${m.user}`}>
                <td>{m.user}</td>
                <td>
                  {canManage ? (
                    <select aria-label={`Role of ${m.user}`} data-testid={`member-role-${m.user}`} value={m.role} disabled={form.busy} onChange={(e) => void put(m.user, e.target.value)}>
                      {s.policy.names.map((r) => (
                        <option key={r} value={r}>
                          {r}
                        </option>
                      ))}
                    </select>
                  ) : (
                    m.role
                  )}
                </td>
                <td>
                  {canManage && (
                    <button type="button" className="danger" data-testid={`member-remove-${m.user}`} onClick={() => setAsk(m.user)}>
                      Remove
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canManage && (
        <form ref={form.box} className="row" onSubmit={submit} aria-label="Add a member" noValidate>
          <Field form={form} name="user" label="User" idPrefix="mem">
            {(a) => (
              <>
                <input {...a} data-testid="member-user" list="known-users" value={user} onChange={(e) => setUser(e.target.value)} autoComplete="off" spellCheck={false} />
                <datalist id="known-users">
                  {users.map((u) => (
                    <option key={u} value={u} />
                  ))}
                </datalist>
              </>
            )}
          </Field>
          <Field form={form} name="role" label="Role" idPrefix="mem">
            {(a) => (
              <select {...a} data-testid="member-new-role" value={role} onChange={(e) => setRole(e.target.value)}>
                {s.policy.names.map((r) => (
                  <option key={r} value={r}>
                    {r}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <button type="submit" data-testid="member-add" disabled={form.busy}>
            Add or change
          </button>
        </form>
      )}
      {ask && <Confirm title={`Remove ${ask} from ${project}?`} okLabel="Remove" danger body={<p>{ask} loses their role in {project}: their tokens and sessions stop acting here.</p>} onOK={() => void remove(ask)} onCancel={() => setAsk(undefined)} />}
    </section>
  );
}

function Quota({ project, canEdit }: { project: string; canEdit: boolean }) {
  const [rep, setRep] = useState<QuotaReport>();
  const [err, setErr] = useState<unknown>();
  const [f, setF] = useState<QuotaForm>({});
  const [editing, setEditing] = useState(false);
  const rows = rep ? quotaRows(rep) : [];
  const form = useForm(rows.map((r) => `quota.${r.key}`).concat(['quota']));
  const path = `/v1/projects/${seg(project)}/quota`;
  const load = useCallback(() => {
    call<QuotaReport>('GET', path).then(setRep, setErr);
  }, [path]);
  useEffect(() => {
    load();
    const t = setInterval(load, 15_000);
    return () => clearInterval(t);
  }, [load]);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const b = quotaBody(f);
    if ('field' in b) {
      form.place(b.field, `error-${b.field.replace(/\./g, '-')}`, b.message);
      return;
    }
    if (await form.run(async () => setRep(await call<QuotaReport>('PUT', path, b.body)))) setEditing(false);
  }
  return (
    <section className="card" aria-labelledby="quota-h" data-testid="quota">
      <div className="row">
        <h2 id="quota-h">Quota and usage</h2>
        <div className="spacer" />
        {canEdit && !editing && rep && (
          <button
            type="button"
            data-testid="quota-edit"
            onClick={() => {
              setF(quotaForm(rows));
              setEditing(true);
            }}
          >
            Change the quota
          </button>
        )}
      </div>
      <ErrorBox err={err} />
      {!editing &&
        rows.map((r) => {
          const fmt = r.unit === 'MiB' ? mib : String;
          if (r.limit === undefined) {
            return (
              <div className="bar" key={r.key} data-testid={`quota-${r.key}`}>
                <div className="bar-label">
                  <span>{r.label}</span>
                  <span>{fmt(r.used)} used, no limit</span>
                </div>
              </div>
            );
          }
          const pct = percent(r.used, r.limit);
          return <CapacityBar key={r.key} plain label={r.label} testId={`quota-${r.key}`} fmt={fmt} use={{ used: r.used, capacity: r.limit, physical: r.limit, percent: pct, level: level(pct), known: false }} />;
        })}
      {editing && (
        <form ref={form.box} onSubmit={submit} noValidate aria-label="Quota">
          <FormError form={form} testId="quota-error" />
          <p className="muted small">Blank is no limit. Lowering a limit under the usage is allowed: nothing is taken away, but nothing more can be added.</p>
          {rows.map((r) => (
            <Field key={r.key} form={form} name={`quota.${r.key}`} label={`${r.label}${r.unit === 'MiB' ? ' (MiB)' : ''}`} idPrefix="q" help={`${r.unit === 'MiB' ? mib(r.used) : r.used} in use`}>
              {(a) => <input {...a} data-testid={`quota-input-${r.key}`} inputMode="numeric" value={f[r.key] ?? ''} onChange={(e) => setF({ ...f, [r.key]: e.target.value })} />}
            </Field>
          ))}
          <div className="row end">
            <button type="button" onClick={() => setEditing(false)}>
              Cancel
            </button>
            <button type="submit" className="primary" data-testid="quota-save" disabled={form.busy}>
              Save
            </button>
          </div>
        </form>
      )}
    </section>
  );
}

const hours = (s?: number) => (s ? String(Math.round((s / 3600) * 100) / 100) : '');

function Settings({ p, canDescribe, canLease, onSaved }: { p: Project; canDescribe: boolean; canLease: boolean; onSaved(p: Project): void }) {
  const form = useForm(['description', 'maxLeaseSeconds', 'leaseGraceSeconds']);
  const [desc, setDesc] = useState(p.spec.description ?? '');
  const [maxH, setMaxH] = useState(hours(p.spec.maxLeaseSeconds));
  const [graceH, setGraceH] = useState(hours(p.spec.leaseGraceSeconds));
  const secs = (h: string) => (h.trim() === '' ? 0 : Math.round(Number(h) * 3600));
  async function submit(e: FormEvent) {
    e.preventDefault();
    const body: Record<string, unknown> = {};
    if (canDescribe) body.description = desc;
    if (canLease) {
      for (const [k, v] of [
        ['maxLeaseSeconds', maxH],
        ['leaseGraceSeconds', graceH],
      ] as const) {
        if (v.trim() !== '' && !Number.isFinite(Number(v))) {
          form.place(k, `error-${k}`, `must be a number of hours, not "${v}"`);
          return;
        }
        body[k] = secs(v);
      }
    }
    await form.run(async () => onSaved(await call<Project>('PATCH', `/v1/projects/${seg(p.name)}`, body)));
  }
  return (
    <form ref={form.box} className="card" onSubmit={submit} aria-labelledby="settings-h" noValidate>
      <h2 id="settings-h">Settings</h2>
      <FormError form={form} testId="settings-error" />
      <Field form={form} name="description" label="Description" idPrefix="ps">
        {(a) => <input {...a} data-testid="settings-description" value={desc} disabled={!canDescribe} onChange={(e) => setDesc(e.target.value)} />}
      </Field>
      <Field form={form} name="maxLeaseSeconds" label="Longest lease (hours)" idPrefix="ps" help={p.spec.maxLeaseSeconds ? `Now ${duration(p.spec.maxLeaseSeconds)}: every VM gets a lease, at most this long.` : 'Blank or 0: VMs need no lease.'}>
        {(a) => <input {...a} data-testid="settings-max-lease" inputMode="decimal" value={maxH} disabled={!canLease} onChange={(e) => setMaxH(e.target.value)} />}
      </Field>
      <Field form={form} name="leaseGraceSeconds" label="Kept stopped after expiry (hours)" idPrefix="ps" help={`Then deleted. Now ${duration(p.spec.leaseGraceSeconds || 86400)}${p.spec.leaseGraceSeconds ? '' : ' (the default)'}.`}>
        {(a) => <input {...a} data-testid="settings-grace" inputMode="decimal" value={graceH} disabled={!canLease} onChange={(e) => setGraceH(e.target.value)} />}
      </Field>
      {!canLease && <p className="muted small">Superadmins set the lease policy.</p>}
      {(canDescribe || canLease) && (
        <div className="row end">
          <button type="submit" className="primary" data-testid="settings-save" disabled={form.busy}>
            Save
          </button>
        </div>
      )}
    </form>
  );
}

export function ProjectPage({ name }: { name: string }) {
  const s = useSession();
  const [p, setP] = useState<Project>();
  const [err, setErr] = useState<unknown>();
  const [gone, setGone] = useState(false);
  const [ask, setAsk] = useState(false);
  const load = useCallback(() => {
    call<Project>('GET', `/v1/projects/${seg(name)}`).then(setP, (e) => (e instanceof APIError && e.status === 404 ? setGone(true) : setErr(e)));
  }, [name]);
  useEffect(load, [load]);
  const remove = async () => {
    setAsk(false);
    try {
      await call('DELETE', `/v1/projects/${seg(name)}`);
      s.reload();
      navigate('/projects');
    } catch (e) {
      setErr(e);
    }
  };
  if (!p) {
    return (
      <div>
        <p>
          <Link to="/projects">← Projects</Link>
        </p>
        {gone ? <p className="card">There is no project {name}, or you do not belong to it.</p> : err ? <ErrorBox err={err} /> : <p className="muted">Loading…</p>}
      </div>
    );
  }
  return (
    <div>
      <p className="crumbs">
        <Link to="/projects">Projects</Link>
      </p>
      <div className="row">
        <h1>{p.name}</h1>
        <span className="muted">{p.spec.description}</span>
        <span className="muted">· your role: {s.role(p.name) || (s.superadmin ? 'superadmin' : 'none')}</span>
        <div className="spacer" />
        <Link to={`/vms?project=${seg(p.name)}`} onClick={() => s.setProject(p.name)}>
          Its VMs
        </Link>
        {s.superadmin && (
          <button type="button" className="danger" data-testid="project-delete" onClick={() => setAsk(true)}>
            Delete project
          </button>
        )}
      </div>
      <ErrorBox err={err} />
      <div className="grid two">
        <Quota project={p.name} canEdit={s.superadmin} />
        <Members project={p.name} canManage={s.can('member.manage', p.name)} onChange={s.reload} />
      </div>
      <Settings key={p.version} p={p} canDescribe={s.can('project.update', p.name)} canLease={s.superadmin} onSaved={setP} />
      {ask && <Confirm title={`Delete project ${p.name}?`} okLabel="Delete" danger body={<p>The API refuses while the project holds VMs, images or providers.</p>} onOK={() => void remove()} onCancel={() => setAsk(false)} />}
    </div>
  );
}
