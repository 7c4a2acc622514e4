import { useState, type FormEvent } from 'react';
import { call, type WhoAmI } from '../api';
import { useSession } from '../session';
import { navigate } from '../router';
import { ErrorBox } from '../ui';

export function Login() {
  const s = useSession();
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [token, setTokenField] = useState('');
  const [err, setErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setErr(undefined);
    setBusy(true);
    try {
      let t = token.trim();
      if (!t) {
        const sess = await call<{ token: string }>('POST', '/v1/login', { user, password });
        t = sess.token;
      }
      await s.signIn(t);
      await call<WhoAmI>('GET', '/v1/whoami');
      const next = new URLSearchParams(location.search).get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/');
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <form onSubmit={submit} className="card" aria-labelledby="login-title">
        <h1 id="login-title">Sign in to Polyvisor</h1>
        <label>
          User
          <input data-testid="login-user" autoComplete="username" value={user} onChange={(e) => setUser(e.target.value)} autoFocus />
        </label>
        <label>
          Password
          <input data-testid="login-password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />
        </label>
        <details>
          <summary>Use an API token instead</summary>
          <label>
            Token
            <input data-testid="login-token" type="password" value={token} onChange={(e) => setTokenField(e.target.value)} />
          </label>
        </details>
        <div data-testid="login-error">
          <ErrorBox err={err} />
        </div>
        <button data-testid="login-submit" className="primary" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}
