// The bar over every page: navigation, project switcher, theme, user.
import { useSession } from './session';
import { Link, useLocation } from './router';
import { ThemeToggle } from './theme';

export function TopBar() {
  const s = useSession();
  const { path } = useLocation();
  const nav = (to: string, id: string, label: string) => {
    const here = to === '/' ? path === '/' : path === to || path.startsWith(to + '/');
    return (
      <Link to={to} data-testid={id} aria-current={here ? 'page' : undefined}>
        {label}
      </Link>
    );
  };
  const roles = Object.entries(s.me?.roles ?? {})
    .map(([p, r]) => `${p}: ${r}`)
    .join(', ');
  return (
    <header className="top">
      <a href="#main" className="skip">
        Skip to content
      </a>
      <Link to="/" className="brand">
        Polyvisor
      </Link>
      <nav aria-label="Main">
        {nav('/', 'nav-dashboard', 'Dashboard')}
        {nav('/vms', 'nav-vms', 'VMs')}
        {nav('/images', 'nav-images', 'Images')}
        {nav('/networks', 'nav-networks', 'Networks')}
        {nav('/volumes', 'nav-volumes', 'Volumes')}
        {s.superadmin && nav('/pools', 'nav-pools', 'Pools')}
        {nav('/hosts', 'nav-hosts', 'Hosts')}
        {s.superadmin && nav('/capacity', 'nav-capacity', 'Capacity')}
        {s.superadmin && nav('/balance', 'nav-balance', 'Balancing')}
        {nav('/providers', 'nav-providers', 'Providers')}
        {nav('/projects', 'nav-projects', 'Projects')}
        {nav('/migrations', 'nav-migrations', 'Migrations')}
        {nav('/operations', 'nav-operations', 'Operations')}
        {s.superadmin && nav('/users', 'nav-users', 'Users')}
        {s.canAudit && nav('/audit', 'nav-audit', 'Audit')}
      </nav>
      <div className="spacer" />
      <label className="inline">
        Project
        <select data-testid="project-switcher" value={s.project} onChange={(e) => s.setProject(e.target.value)}>
          {!s.projects.includes(s.project) && <option value={s.project}>{s.project}</option>}
          {s.projects.map((p) => (
            <option key={p} value={p}>
              {p}
              {s.me?.roles?.[p] ? ` (${s.me.roles[p]})` : s.me?.superadmin ? ' (superadmin)' : ''}
            </option>
          ))}
        </select>
      </label>
      <ThemeToggle />
      <div className="user" role="group" aria-label="User">
        <Link to="/account" className="who" data-testid="nav-account" aria-current={path === '/account' ? 'page' : undefined} title={`Your account: password and tokens (${s.me?.superadmin ? 'superadmin' : roles || 'no project roles'})`}>
          {s.me?.name}
          {s.me?.superadmin && <span className="muted"> (superadmin)</span>}
        </Link>
        <button type="button" data-testid="logout" onClick={() => void s.signOut()}>
          Sign out
        </button>
      </div>
    </header>
  );
}
