// Who is signed in, the current project, and the role held there.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { call, getToken, listAll, setOnUnauthorized, setToken, type Project, type WhoAmI } from './api';
import { allows, mayReadAudit, type Action } from './lib/roles';
import { navigate } from './router';
import { stopEvents } from './events';

interface Session {
  me?: WhoAmI;
  loadError?: unknown;
  projects: string[];
  project: string;
  setProject(p: string): void;
  role(project?: string): string;
  can(a: Action, project?: string): boolean;
  canAudit: boolean;
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

  const load = useCallback(async () => {
    setLoadError(undefined);
    const w = await call<WhoAmI>('GET', '/v1/whoami');
    let names: string[];
    try {
      names = (await listAll<Project>('/v1/projects')).map((p) => p.name);
    } catch {
      names = Object.keys(w.roles ?? {});
    }
    names.sort((a, b) => a.localeCompare(b));
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
      can: (a, p = project) => allows(role(p), !!me?.superadmin, a),
      canAudit: mayReadAudit(!!me?.superadmin, me?.roles),
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
  }, [me, loadError, projects, project, load]);
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
