import { useState, type FormEvent } from 'react';
import { call } from '../api';
import { useSession } from '../session';
import { navigate } from '../router';
import { ErrorBox } from '../ui';
import { ThemeToggle } from '../theme';

// safeNext keeps a ?next= redirect inside the app.
function safeNext(): string {
  const next = new URLSearchParams(location.search).get('next');
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/login') ? next : '/';
}

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
        if (!user.trim() || !password) throw new Error('Enter your user name and password, or an API token.');
        const sess = await call<{ token: string }>('POST', '/v1/login', { user: user.trim(), password });
        t = sess.token;
      }
      await s.signIn(t);
      navigate(safeNext());
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login" id="main">
      <div className="login-theme">
        <ThemeToggle />
      </div>
      <form onSubmit={submit} className="card" aria-labelledby="login-title" noValidate>
        <h1 id="login-title">Sign in to Polyvisor</h1>
        <label>
          User
          <input data-testid="login-user" name="user" autoComplete="username" value={user} onChange={(e) => setUser(e.target.value)} autoFocus />
        </label>
        <label>
          Password
          <input data-testid="login-password" name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />
        </label>
        <p className="or" aria-hidden="true">
          <span>or</span>
        </p>
        <label>
          API token
          <input
            data-testid="login-token"
            name="token"
            type="password"
            autoComplete="off"
            spellCheck={false}
            placeholder="pva_…"
            aria-describedby="token-help"
            value={token}
            onChange={(e) => setTokenField(e.target.value)}
          />
        </label>
        <small id="token-help" className="muted">
          A token, when given, is used instead of the user and password.
        </small>
        <ErrorBox err={err} testId="login-error" />
        <button type="submit" data-testid="login-submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
