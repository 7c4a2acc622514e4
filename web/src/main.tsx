import { StrictMode, lazy, Suspense, useEffect } from 'react';
import { createRoot } from 'react-dom/client';
import './styles.css';
import { SessionProvider, useSession } from './session';
import { Link, useLocation } from './router';
import { applyTheme } from './theme';
import { TopBar } from './TopBar';
import { ErrorBox } from './ui';
import { Login } from './pages/Login';
import { Dashboard } from './pages/Dashboard';
import { VMs } from './pages/VMs';
import { CreateVM } from './pages/CreateVM';
import { Operations } from './pages/Operations';
import { Audit } from './pages/Audit';
import { Images } from './pages/Images';
import { Networks } from './pages/Networks';
import { Hosts } from './pages/Hosts';
import { HostPage } from './pages/HostPage';
import { Providers } from './pages/Providers';
import { ProviderPage } from './pages/ProviderPage';
import { Projects } from './pages/Projects';
import { ProjectPage } from './pages/ProjectPage';
import { Users } from './pages/Users';
import { Account } from './pages/Account';
import { Volumes } from './pages/Volumes';
import { Pools } from './pages/Pools';
import { Capacity } from './pages/Capacity';
import { Balance } from './pages/Balance';
import { MigrationPage, Migrations } from './pages/Migrations';
import { ImportWizard } from './pages/ImportWizard';

// The VM page carries the consoles (noVNC, xterm.js): loaded when needed.
const VMPage = lazy(() => import('./pages/VMPage'));

function Page({ path }: { path: string }) {
  const vm = path.match(/^\/vms\/([^/]+)\/([^/]+)\/?$/);
  if (vm) return <VMPage project={decodeURIComponent(vm[1])} name={decodeURIComponent(vm[2])} />;
  const mig = path.match(/^\/migrations\/([^/]+)\/([^/]+)\/?$/);
  if (mig) return <MigrationPage key={path} project={decodeURIComponent(mig[1])} name={decodeURIComponent(mig[2])} />;
  const one = path.match(/^\/(hosts|providers|projects)\/([^/]+)\/?$/);
  if (one) {
    const name = decodeURIComponent(one[2]);
    if (one[1] === 'hosts') return <HostPage key={name} name={name} />;
    if (one[1] === 'providers') return <ProviderPage key={name} name={name} />;
    return <ProjectPage key={name} name={name} />;
  }
  switch (path.replace(/\/$/, '') || '/') {
    case '/':
      return <Dashboard />;
    case '/vms':
      return <VMs />;
    case '/create':
      return <CreateVM />;
    case '/operations':
      return <Operations />;
    case '/audit':
      return <Audit />;
    case '/images':
      return <Images />;
    case '/networks':
      return <Networks />;
    case '/volumes':
      return <Volumes />;
    case '/pools':
      return <Pools />;
    case '/capacity':
      return <Capacity />;
    case '/balance':
      return <Balance />;
    case '/migrations':
      return <Migrations />;
    case '/migrations/import':
      return <ImportWizard />;
    case '/hosts':
      return <Hosts />;
    case '/providers':
      return <Providers />;
    case '/projects':
      return <Projects />;
    case '/users':
      return <Users />;
    case '/account':
      return <Account />;
  }
  return (
    <div className="card">
      <h1>Not found</h1>
      <p>
        There is no page at <code>{path}</code>. <Link to="/">Back to the dashboard</Link>
      </p>
    </div>
  );
}

function App() {
  const { path, search } = useLocation();
  const s = useSession();
  // ?project= in a bookmarked URL selects that project.
  const wanted = new URLSearchParams(search).get('project');
  useEffect(() => {
    if (wanted && s.me && wanted !== s.project && s.projects.includes(wanted)) s.setProject(wanted);
  }, [wanted, s.me, s.project, s.projects, s]);

  if (path === '/login') return <Login />;
  if (!s.me) {
    return (
      <main className="loading" id="main">
        {s.loadError ? (
          <>
            <ErrorBox err={s.loadError} />
            <button type="button" onClick={s.reload}>
              Try again
            </button>
          </>
        ) : (
          'Loading…'
        )}
      </main>
    );
  }
  return (
    <>
      <TopBar />
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<p className="muted">Loading…</p>}>
          <Page path={path} />
        </Suspense>
      </main>
    </>
  );
}

applyTheme();
createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <SessionProvider>
      <App />
    </SessionProvider>
  </StrictMode>,
);
