// Who is signed in, the current project, and the role held there.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { call, getToken, listAll, loadRoutes, setOnUnauthorized, setToken, type Project, type WhoAmI } from './api';
import { allows, mayReadAudit, Policy, type Permission, type RoleInfo } from './lib/roles';
import { offers, type RouteSet } from './lib/routes';
import { navigate } from './router';
import { stopEvents } from './events';

interface Session {
  me?: WhoAmI;
  loadError?: unknown;
  projects: string[];
  project: string;
  setProject(p: string): void;
  role(project?: string): string;
  // can tells whether the caller holds a permission ("vm.power") in a
  // project (the current one by default), as GET /v1/roles defines it.
  can(p: Permission, project?: string): boolean;
  canAudit: boolean;
  superadmin: boolean;
  // policy is the API's project roles and what each allows.
  policy: Policy;
  // offers tells whether the server has a route ("POST /v1/hosts/{name}/cordon").
  offers(route: string): boolean;
  reload(): void;
  signIn(token: string): Promise<void>;
  signOut(): Promise<void>;
}

const Ctx = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(Ctx);
  if (!s) throw new Error('no session');
  return s;
}

const projectKey = 'polyvisor.project';

function toLogin(replace = false) {
  if (location.pathname === '/login') return;
  navigate('/login?next=' + encodeURIComponent(location.pathname + location.search), replace);
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<WhoAmI>();
  const [loadError, setLoadError] = useState<unknown>();
  const [projects, setProjects] = useState<string[]>([]);
  const [project, setProjectState] = useState(localStorage.getItem(projectKey) ?? 'default');
  const [policy, setPolicy] = useState(() => new Policy([]));
  const [routes, setRoutes] = useState<RouteSet>();

  const load = useCallback(async () => {
    setLoadError(undefined);
    const [w, roles, rs] = await Promise.all([call<WhoAmI>('GET', '/v1/whoami'), call<{ items: RoleInfo[] | null }>('GET', '/v1/roles'), loadRoutes()]);
    let names: string[];
    try {
      names = (await listAll<Project>('/v1/projects')).map((p) => p.name);
    } catch {
      names = Object.keys(w.roles ?? {});
    }
    names.sort((a, b) => a.localeCompare(b));
    setPolicy(new Policy(roles.items ?? []));
    setRoutes(rs);
    setMe(w);
    setProjects(names);
    setProjectState((cur) => (names.includes(cur) ? cur : (w.project ?? names[0] ?? 'default')));
  }, []);

  useEffect(() => {
    setOnUnauthorized(() => {
      stopEvents();
      setToken('');
      setMe(undefined);
      toLogin();
    });
    if (getToken()) load().catch(setLoadError);
    else toLogin(true);
  }, [load]);

  const value = useMemo<Session>(() => {
    const role = (p = project) => (me?.roles?.[p] ?? '') as string;
    return {
      me,
      loadError,
      projects,
      project,
      setProject(p) {
        localStorage.setItem(projectKey, p);
        setProjectState(p);
        // A view whose URL names the project follows the switch.
        const u = new URL(location.href);
        if (u.searchParams.has('project') && u.searchParams.get('project') !== p) {
          u.searchParams.set('project', p);
          navigate(u.pathname + u.search, true);
        }
      },
      role,
      can: (perm, p = project) => allows(policy, role(p), !!me?.superadmin, perm),
      canAudit: mayReadAudit(policy, !!me?.superadmin, me?.roles),
      superadmin: !!me?.superadmin,
      policy,
      offers: (r) => offers(routes, r),
      reload() {
        load().catch(setLoadError);
      },
      async signIn(token) {
        stopEvents();
        setToken(token);
        await load();
      },
      async signOut() {
        await call('POST', '/v1/logout').catch(() => {});
        stopEvents();
        setToken('');
        setMe(undefined);
        navigate('/login');
      },
    };
  }, [me, loadError, projects, project, load, policy, routes]);
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
