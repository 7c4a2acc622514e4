import { useState, type FormEvent } from 'react';
import { call, q, type Token, type TokenCreated } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Confirm, Dialog, ErrorBox, ago } from '../ui';
import { Field, FormError, useForm } from '../form';
import { emptyToken, narrowed, tokenBody, tokenScope, type TokenForm } from '../lib/tokens';

type Row = Token & { version?: number };
const byID = (t: Row) => t.id;

function ChangePassword({ user }: { user: string }) {
  const form = useForm(['current', 'password']);
  const blank = { current: '', password: '', again: '' };
  const [f, setF] = useState(blank);
  const [done, setDone] = useState(false);
  async function submit(e: FormEvent) {
    e.preventDefault();
    setDone(false);
    if (f.password !== f.again) {
      form.place('again', 'error-again', 'the two new passwords differ');
      return;
    }
    const ok = await form.run(() => call('PUT', `/v1/users/${encodeURIComponent(user)}/password`, { current: f.current, password: f.password }));
    setF(blank);
    setDone(ok);
  }
  return (
    <form ref={form.box} className="card wizard" onSubmit={submit} aria-labelledby="pw-h" noValidate>
      <h2 id="pw-h">Change your password</h2>
      <FormError form={form} testId="password-error" />
      {done && (
        <p role="status" data-testid="password-changed">
          Your password is changed. Your other sessions have ended; this one goes on.
        </p>
      )}
      <Field form={form} name="current" label="Current password" idPrefix="pw">
        {(a) => <input {...a} data-testid="password-current" type="password" value={f.current} onChange={(e) => setF({ ...f, current: e.target.value })} autoComplete="current-password" />}
      </Field>
      <Field form={form} name="password" label="New password" idPrefix="pw">
        {(a) => <input {...a} data-testid="password-new" type="password" value={f.password} onChange={(e) => setF({ ...f, password: e.target.value })} autoComplete="new-password" />}
      </Field>
      <Field form={form} name="again" label="New password, again" idPrefix="pw">
        {(a) => <input {...a} data-testid="password-again" type="password" value={f.again} onChange={(e) => setF({ ...f, again: e.target.value })} autoComplete="new-password" />}
      </Field>
      <div className="row end">
        <button type="submit" className="primary" data-testid="password-submit" disabled={form.busy}>
          Change password
        </button>
      </div>
    </form>
  );
}

const expiries: [string, string][] = [
  ['', 'never'],
  [String(86400), '1 day'],
  [String(30 * 86400), '30 days'],
  [String(365 * 86400), '1 year'],
];

// Secret shows a new token's secret, this once.
function Secret({ t, onClose }: { t: TokenCreated; onClose(): void }) {
  const [copied, setCopied] = useState(false);
  return (
    <Dialog title={`Token ${t.name}`} onClose={onClose} initialFocus='[data-testid="token-secret"]'>
      <p>
        This is the only time the secret is shown: copy it now. It acts as {t.user}, {tokenScope(t)}.
      </p>
      <input className="mono secret" data-testid="token-secret" readOnly value={t.secret} onFocus={(e) => e.currentTarget.select()} aria-label="Token secret" />
      <div className="row end">
        <button
          type="button"
          onClick={() =>
            void navigator.clipboard?.writeText(t.secret).then(
              () => setCopied(true),
              () => setCopied(false),
            )
          }
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
        <button type="button" className="primary" data-testid="token-secret-close" onClick={onClose}>
          Done
        </button>
      </div>
    </Dialog>
  );
}

function Tokens() {
  const s = useSession();
  const me = s.me!;
  const [everyone, setEveryone] = useState(false);
  const live = useLiveList<Row>((sig) => call<{ items: Token[] | null }>('GET', '/v1/tokens' + q({ user: everyone ? undefined : me.name }), undefined, sig).then((l) => (l.items ?? []) as Row[]), () => undefined, byID, [everyone, me.name]);
  const form = useForm(['name', 'project', 'role', 'expiresInSeconds', 'user', 'current']);
  const [f, setF] = useState<TokenForm>(emptyToken);
  const [created, setCreated] = useState<TokenCreated>();
  const [ask, setAsk] = useState<Token>();
  const [err, setErr] = useState<unknown>();
  const mine = s.superadmin ? s.projects : Object.keys(me.roles ?? {}).sort();
  // Signed in with a password, a new token needs it again.
  const inSession = live.items.some((t) => t.id === me.tokenId && t.kind === 'session');
  async function submit(e: FormEvent) {
    e.preventDefault();
    const ok = await form.run(async () => {
      setCreated(await call<TokenCreated>('POST', '/v1/tokens', tokenBody(f)));
      live.reload();
    });
    if (ok) setF(emptyToken);
  }
  const revoke = async (t: Token) => {
    setAsk(undefined);
    setErr(undefined);
    try {
      await call('DELETE', `/v1/tokens/${encodeURIComponent(t.id)}`);
      live.reload();
    } catch (x) {
      setErr(x);
    }
  };
  const rows = [...live.items].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  return (
    <section aria-labelledby="tokens-h">
      <div className="row">
        <h2 id="tokens-h">Tokens</h2>
        <span className="muted">API tokens for scripts and the CLI, and the sessions of your sign-ins.</span>
        <div className="spacer" />
        {s.superadmin && (
          <label className="inline">
            <input type="checkbox" checked={everyone} onChange={(e) => setEveryone(e.target.checked)} /> Everyone's
          </label>
        )}
      </div>
      <ErrorBox err={live.error ?? err} testId="tokens-error" />
      <div className="tablewrap">
        <table data-testid="tokens-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              {everyone && <th scope="col">User</th>}
              <th scope="col">Acts as</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((t) => (
              <tr key={t.id} data-testid={`token-row-${t.name}`}>
                <td>
                  {t.name}
                  {t.id === me.tokenId && <span className="muted"> (this session)</span>}
                  <div className="muted small mono">{t.id}</div>
                </td>
                <td>{t.kind}</td>
                {everyone && <td>{t.user}</td>}
                <td className="wrap">{tokenScope(t)}</td>
                <td className="muted">{ago(t.createdAt)}</td>
                <td className="muted">{t.expiresAt ? new Date(t.expiresAt).toLocaleString() : 'never'}</td>
                <td>
                  <button type="button" className="danger" data-testid={`token-revoke-${t.name}`} onClick={() => setAsk(t)}>
                    Revoke
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <form ref={form.box} className="card wizard" onSubmit={submit} aria-labelledby="newtoken-h" noValidate>
        <h3 id="newtoken-h">Create a token</h3>
        <FormError form={form} testId="token-error" />
        <Field form={form} name="name" label="Name" idPrefix="tk">
          {(a) => <input {...a} data-testid="token-name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} autoComplete="off" spellCheck={false} />}
        </Field>
        <Field form={form} name="project" label="Only in project" idPrefix="tk" help="Narrow the token to one project (it acts nowhere else).">
          {(a) => (
            <select {...a} data-testid="token-project" value={f.project} onChange={(e) => setF({ ...f, project: e.target.value })}>
              <option value="">(every project of yours)</option>
              {mine.map((p) => (
                <option key={p} value={p}>
                  {p}
                  {me.roles?.[p] ? ` (${me.roles[p]})` : ''}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field form={form} name="role" label="At most the role" idPrefix="tk" help="The token acts with this role, or yours if it is less.">
          {(a) => (
            <select {...a} data-testid="token-role" value={f.role} onChange={(e) => setF({ ...f, role: e.target.value })}>
              <option value="">(your role)</option>
              {s.policy.names.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field form={form} name="expiresInSeconds" label="Expires" idPrefix="tk">
          {(a) => (
            <select {...a} value={f.expiresInSeconds} onChange={(e) => setF({ ...f, expiresInSeconds: e.target.value })}>
              {expiries.map(([v, l]) => (
                <option key={v} value={v}>
                  {l}
                </option>
              ))}
            </select>
          )}
        </Field>
        {inSession && (
          <Field form={form} name="current" label="Your password" idPrefix="tk" help="Signed in with your password, you give it again to make a token; the token ends when your password changes.">
            {(a) => <input {...a} data-testid="token-current" type="password" value={f.current ?? ''} onChange={(e) => setF({ ...f, current: e.target.value })} autoComplete="current-password" />}
          </Field>
        )}
        <div className="row end">
          <button type="submit" className="primary" data-testid="token-submit" disabled={form.busy}>
            Create token
          </button>
        </div>
      </form>
      {created && <Secret t={created} onClose={() => setCreated(undefined)} />}
      {ask && (
        <Confirm
          title={`Revoke ${ask.name}?`}
          okLabel="Revoke"
          danger
          body={<p>{ask.id === me.tokenId ? 'This is the session you are using: you will be signed out.' : `Whatever uses ${ask.name} is refused from now on, its open streams and consoles included.`}</p>}
          onOK={() => void revoke(ask)}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </section>
  );
}

export function Account() {
  const s = useSession();
  const me = s.me!;
  const isNarrowed = narrowed(me);
  return (
    <div>
      <h1>Your account</h1>
      <section className="card" aria-label="Who you are" data-testid="whoami">
        <p>
          Signed in as <strong>{me.name}</strong>
          {me.superadmin && ' (superadmin)'}
          {isNarrowed && (
            <span data-testid="narrowed">
              {' '}
              with a token narrowed to {tokenScope({ kind: 'api', project: me.project, role: me.role })}
            </span>
          )}
          .
        </p>
        <p className="muted">
          {Object.entries(me.roles ?? {})
            .map(([p, r]) => `${r} in ${p}`)
            .join(', ') || 'No project roles.'}
        </p>
      </section>
      {isNarrowed ? (
        <p className="card muted" data-testid="narrowed-account">
          A narrowed token cannot change passwords or make tokens: sign in with your password for that.
        </p>
      ) : (
        <>
          <ChangePassword user={me.name} />
          <Tokens />
        </>
      )}
    </div>
  );
}
