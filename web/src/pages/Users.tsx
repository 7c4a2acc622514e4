import { useState, type FormEvent } from 'react';
import { call, listAll, type User } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Confirm, Dialog, ErrorBox } from '../ui';
import { Field, FormError, useForm } from '../form';

const byName = (u: User) => u.name;
const seg = encodeURIComponent;

function CreateUser({ onCreated }: { onCreated(): void }) {
  const form = useForm(['name', 'displayName', 'password', 'superadmin']);
  const blank = { name: '', displayName: '', password: '', superadmin: false };
  const [f, setF] = useState(blank);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const ok = await form.run(async () => {
      await call<User>('POST', '/v1/users', { name: f.name.trim(), displayName: f.displayName.trim() || undefined, password: f.password || undefined, superadmin: f.superadmin || undefined });
      onCreated();
    });
    setF((cur) => (ok ? blank : { ...cur, password: '' }));
  }
  return (
    <form ref={form.box} className="card wizard" onSubmit={submit} aria-labelledby="newuser-h" noValidate>
      <h2 id="newuser-h">Create a user</h2>
      <FormError form={form} testId="user-create-error" />
      <Field form={form} name="name" label="Name" idPrefix="nu">
        {(a) => <input {...a} data-testid="user-name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} autoComplete="off" spellCheck={false} />}
      </Field>
      <Field form={form} name="displayName" label="Display name" idPrefix="nu">
        {(a) => <input {...a} value={f.displayName} onChange={(e) => setF({ ...f, displayName: e.target.value })} autoComplete="off" />}
      </Field>
      <Field form={form} name="password" label="Password" idPrefix="nu" help="Blank: the user works with tokens made for it until a password is set.">
        {(a) => <input {...a} data-testid="user-password" type="password" value={f.password} onChange={(e) => setF({ ...f, password: e.target.value })} autoComplete="new-password" />}
      </Field>
      <Field form={form} name="superadmin" label="Superadmin" idPrefix="nu" help="May do everything in every project.">
        {(a) => <input {...a} type="checkbox" checked={f.superadmin} onChange={(e) => setF({ ...f, superadmin: e.target.checked })} />}
      </Field>
      <div className="row end">
        <button type="submit" className="primary" data-testid="user-submit" disabled={form.busy}>
          Create
        </button>
      </div>
    </form>
  );
}

// ResetPassword sets another user's password (superadmins).
function ResetPassword({ user, onClose }: { user: string; onClose(done: boolean): void }) {
  const form = useForm(['password']);
  const [pw, setPw] = useState('');
  return (
    <Dialog title={`Set the password of ${user}`} onClose={() => onClose(false)}>
      <form
        ref={form.box}
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void form.run(async () => {
            await call('PUT', `/v1/users/${seg(user)}/password`, { password: pw });
            onClose(true);
          });
        }}
      >
        <FormError form={form} testId="reset-error" />
        <Field form={form} name="password" label="New password" idPrefix="rp" help="Their other sessions end.">
          {(a) => <input {...a} data-testid="reset-password" type="password" value={pw} onChange={(e) => setPw(e.target.value)} autoComplete="new-password" />}
        </Field>
        <div className="row end">
          <button type="button" onClick={() => onClose(false)}>
            Cancel
          </button>
          <button type="submit" className="primary" data-testid="reset-submit" disabled={form.busy}>
            Set password
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function Users() {
  const s = useSession();
  const live = useLiveList<User>((sig) => listAll<User>('/v1/users', {}, sig), () => undefined, byName, [], 30_000);
  const [err, setErr] = useState<unknown>();
  const [note, setNote] = useState('');
  const [reset, setReset] = useState<string>();
  const [del, setDel] = useState<string>();
  if (!s.superadmin) {
    return (
      <div className="card">
        <h1>Users</h1>
        <p>Superadmins manage users. Your own password and tokens are on your account page.</p>
      </div>
    );
  }
  const act = async (f: () => Promise<unknown>, done: string) => {
    setErr(undefined);
    setNote('');
    try {
      await f();
      setNote(done);
      live.reload();
    } catch (e) {
      setErr(e);
    }
  };
  const rows = [...live.items].sort((a, b) => a.name.localeCompare(b.name));
  return (
    <div>
      <h1>Users</h1>
      <ErrorBox err={live.error ?? err} testId="users-error" />
      {note && (
        <p role="status" className="muted" data-testid="users-note">
          {note}
        </p>
      )}
      <div className="tablewrap">
        <table data-testid="users-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Display name</th>
              <th scope="col">Kind</th>
              <th scope="col">Roles</th>
              <th scope="col">Password</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((u) => (
              <tr key={u.name} data-testid={`user-row-${u.name}`} className={u.disabled ? 'disabled' : undefined}>
                <td>{u.name}</td>
                <td>{u.displayName}</td>
                <td>
                  {u.superadmin ? 'superadmin' : 'user'}
                  {u.disabled && (
                    <span className="state state-error" data-testid={`user-disabled-${u.name}`}>
                      disabled
                    </span>
                  )}
                </td>
                <td className="wrap">
                  {Object.entries(u.roles ?? {})
                    .map(([p, r]) => `${p}: ${r}`)
                    .join(', ')}
                </td>
                <td>{u.hasPassword ? 'set' : 'none (tokens only)'}</td>
                <td className="actions">
                  {u.name !== s.me?.name && (
                    <>
                      <button type="button" data-testid={`user-toggle-${u.name}`} onClick={() => void act(() => call('PATCH', `/v1/users/${seg(u.name)}`, { disabled: !u.disabled }), `${u.name} is ${u.disabled ? 'enabled' : 'disabled'}.`)}>
                        {u.disabled ? 'Enable' : 'Disable'}
                      </button>{' '}
                      <button type="button" data-testid={`user-reset-${u.name}`} onClick={() => setReset(u.name)}>
                        Set password
                      </button>{' '}
                      <button type="button" className="danger" data-testid={`user-delete-${u.name}`} onClick={() => setDel(u.name)}>
                        Delete
                      </button>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <CreateUser onCreated={live.reload} />
      {reset && (
        <ResetPassword
          user={reset}
          onClose={(done) => {
            if (done) setNote(`The password of ${reset} is set.`);
            setReset(undefined);
            live.reload();
          }}
        />
      )}
      {del && (
        <Confirm
          title={`Delete user ${del}?`}
          okLabel="Delete"
          danger
          body={<p>{del} can no longer sign in; their tokens stop working and they leave every project.</p>}
          onOK={() => {
            const u = del;
            setDel(undefined);
            void act(() => call('DELETE', `/v1/users/${seg(u)}`), `${u} is deleted.`);
          }}
          onCancel={() => setDel(undefined)}
        />
      )}
    </div>
  );
}
