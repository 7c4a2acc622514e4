import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import './styles.css';
import { SessionProvider, useSession } from './session';
import { Link, useLocation } from './router';
import { Login } from './pages/Login';
import { Dashboard } from './pages/Dashboard';
import { VMs } from './pages/VMs';
import { VMPage } from './pages/VMPage';
import { CreateVM } from './pages/CreateVM';
import { Operations } from './pages/Operations';
import { Audit } from './pages/Audit';

function useTheme(): [string, () => void] {
  const initial = localStorage.getItem('polyvisor.theme') ?? (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
  const [theme, setTheme] = useState(initial);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem('polyvisor.theme', theme);
  }, [theme]);
  return [theme, () => setTheme(theme === 'dark' ? 'light' : 'dark')];
}

function TopBar() {
  const s = useSession();
  const [theme, toggle] = useTheme();
  const { path } = useLocation();
  const nav = (to: string, id: string, label: string) => (
    <Link to={to} data-testid={id} aria-current={path === to ? 'page' : undefined}>
      {label}
    </Link>
  );
  return (
    <header className="top">
      <Link to="/" className="brand">
        Polyvisor
      </Link>
      <nav aria-label="Main">
        {nav('/', 'nav-dashboard', 'Dashboard')}
        {nav('/vms', 'nav-vms', 'VMs')}
        {nav('/operations', 'nav-operations', 'Operations')}
        {s.can('audit') && nav('/audit', 'nav-audit', 'Audit')}
      </nav>
      <div className="spacer" />
      <label className="inline">
        Project{' '}
        <select data-testid="project-switcher" value={s.project} onChange={(e) => s.setProject(e.target.value)}>
          {s.projects.map((p) => (
            <option key={p} value={p}>
              {p} {s.me?.roles?.[p] ? `(${s.me.roles[p]})` : ''}
            </option>
          ))}
        </select>
      </label>
      <button data-testid="theme-toggle" onClick={toggle} aria-label={`Switch to ${theme === 'dark' ? 'light' : 'dark'} theme`}>
        {theme === 'dark' ? '☀' : '☾'}
      </button>
      <span className="who">{s.me?.name}</span>
      <button data-testid="logout" onClick={() => void s.signOut()}>
        Sign out
      </button>
    </header>
  );
}

function Routes() {
  const { path } = useLocation();
  const s = useSession();
  if (path === '/login') return <Login />;
  if (!s.me) return <main className="loading">Loading…</main>;
  let page;
  const vm = path.match(/^\/vms\/([^/]+)\/([^/]+)$/);
  if (vm) page = <VMPage project={decodeURIComponent(vm[1])} name={decodeURIComponent(vm[2])} />;
  else if (path === '/vms') page = <VMs />;
  else if (path === '/create') page = <CreateVM />;
  else if (path === '/operations') page = <Operations />;
  else if (path === '/audit') page = <Audit />;
  else page = <Dashboard />;
  return (
    <>
      <TopBar />
      <main>{page}</main>
    </>
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <SessionProvider>
      <Routes />
    </SessionProvider>
  </StrictMode>,
);
