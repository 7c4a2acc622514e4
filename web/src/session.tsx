// Who is signed in, the current project, and the role held there.
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from 'react';
import { call, getToken, listAll, setOnUnauthorized, setToken, type Project, type WhoAmI } from './api';
import { allows, type Action, type Role } from './lib/roles';
import { navigate } from './router';

interface Session {
  me?: WhoAmI;
  projects: string[];
  project: string;
  setProject(p: string): void;
  can(a: Action, project?: string): boolean;
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

export function SessionProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<WhoAmI>();
  const [projects, setProjects] = useState<string[]>([]);
  const [project, setProjectState] = useState(localStorage.getItem(projectKey) ?? 'default');

  const load = useCallback(async () => {
    const w = await call<WhoAmI>('GET', '/v1/whoami');
    const ps = await listAll<Project>('/v1/projects');
    const names = ps.map((p) => p.name);
    setMe(w);
    setProjects(names);
    setProjectState((cur) => (names.includes(cur) ? cur : (names[0] ?? 'default')));
  }, []);

  useEffect(() => {
    setOnUnauthorized(() => {
      setToken('');
      setMe(undefined);
      if (location.pathname !== '/login') navigate('/login?next=' + encodeURIComponent(location.pathname + location.search));
    });
    if (getToken()) load().catch(() => {});
    else if (location.pathname !== '/login') navigate('/login?next=' + encodeURIComponent(location.pathname + location.search), true);
  }, [load]);

  const value: Session = {
    me,
    projects,
    project,
    setProject(p) {
      localStorage.setItem(projectKey, p);
      setProjectState(p);
    },
    can(a, p = project) {
      const role = (me?.roles?.[p] ?? '') as Role;
      return allows(role, !!me?.superadmin, a);
    },
    async signIn(token) {
      setToken(token);
      await load();
    },
    async signOut() {
      await call('POST', '/v1/logout').catch(() => {});
      setToken('');
      setMe(undefined);
      navigate('/login');
    },
  };
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
