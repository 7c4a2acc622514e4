import { lazy, Suspense, useCallback, useEffect, useRef, useState } from 'react';
import { call, q, type Operation, type VM } from '../api';
import { useEvents, useResync } from '../events';
import { useSession } from '../session';
import { Link, navigate, useLocation } from '../router';
import { Confirm, ErrorBox, Tabs } from '../ui';
import { needsConfirm, vmActions, type VMAction } from '../lib/roles';
import { OpStatus, useOperation } from '../operation';
import { APIError } from '../lib/errors';
import { isDone } from '../lib/ops';
import { serialHint } from '../lib/consolehint';
import { VMSummary } from './VMSummary';
import { Snapshots } from './Snapshots';
import { VMVolumes } from './Volumes';
import { Usage } from './Usage';
import { MigrateDialog, MigrationLine } from './Migrate';
import { whyNotMigrate } from '../lib/migrate';

const Consoles = lazy(() => import('../consoles'));

const tabs: [string, string][] = [
  ['summary', 'Summary'],
  ['console', 'Console'],
  ['serial', 'Serial'],
  ['snapshots', 'Snapshots'],
  ['volumes', 'Volumes'],
];

const title = (a: string) => a[0].toUpperCase() + a.slice(1);

export default function VMPage({ project, name }: { project: string; name: string }) {
  const s = useSession();
  const { search } = useLocation();
  const params = new URLSearchParams(search);
  const tab = tabs.some(([t]) => t === params.get('tab')) ? params.get('tab')! : 'summary';
  const opID = params.get('op') ?? undefined;
  const [vm, setVM] = useState<VM>();
  const [gone, setGone] = useState(false);
  const [err, setErr] = useState<unknown>();
  const [ask, setAsk] = useState<VMAction>();
  const [migrating, setMigrating] = useState(false);
  const [started, setStarted] = useState<Operation>();
  const op = useOperation(opID, started);
  const base = `/v1/vms/${encodeURIComponent(name)}`;
  const pq = q({ project });
  const here = `/vms/${encodeURIComponent(project)}/${encodeURIComponent(name)}`;

  // What the stream said last: a GET answered before it must not undo it.
  const seen = useRef({ version: -1, gone: false });
  const load = useCallback(() => {
    call<VM>('GET', base + pq).then(
      (v) => {
        const last = seen.current;
        if (v.version < last.version || (v.version === last.version && last.gone)) return;
        seen.current = { version: v.version, gone: false };
        setVM(v);
        setGone(false);
      },
      (e) => {
        if (e instanceof APIError && e.status === 404) setGone(true);
        else setErr(e);
      },
    );
  }, [base, pq]);
  useEffect(() => {
    seen.current = { version: -1, gone: false };
    setVM(undefined);
    setGone(false);
    setErr(undefined);
    load();
  }, [load]);
  useResync(load);
  useEvents((e) => {
    if (e.type !== 'vm' || e.object.name !== name || (e.object.project ?? e.vm?.project) !== project) return;
    const version = e.vm?.version ?? seen.current.version;
    if (e.action === 'deleted') {
      seen.current = { version: Math.max(version, seen.current.version), gone: true };
      setVM(undefined);
      setGone(true);
    } else if (e.vm && e.vm.version >= seen.current.version) {
      seen.current = { version: e.vm.version, gone: false };
      setVM(e.vm);
      setGone(false);
    }
  });

  const onLeased = (v: VM) => {
    if (v.version < seen.current.version) return;
    seen.current = { version: v.version, gone: false };
    setVM(v);
  };

  const url = (patch: Record<string, string | undefined>) => {
    const p = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(patch)) {
      if (v) p.set(k, v);
      else p.delete(k);
    }
    if (p.get('tab') === 'summary') p.delete('tab');
    const s = p.toString();
    return here + (s ? `?${s}` : '');
  };

  async function act(a: VMAction) {
    setAsk(undefined);
    setErr(undefined);
    try {
      const o = a === 'delete' ? await call<Operation>('DELETE', base + pq) : await call<Operation>('POST', `${base}/${a}${pq}`);
      setStarted(o);
      if (a === 'delete') navigate(`/vms?project=${encodeURIComponent(project)}`);
      else navigate(url({ op: o.id }), true);
    } catch (x) {
      setErr(x);
    }
  }

  if (!vm) {
    return (
      <div>
        <p>
          <Link to="/vms">← Virtual machines</Link>
        </p>
        {gone && op && !isDone(op) ? (
          <p className="muted">Waiting for {name} to appear…</p>
        ) : gone ? (
          <div className="card">
            <h1>{name}</h1>
            <p>
              There is no VM {name} in project {project} (anymore).
            </p>
          </div>
        ) : err ? (
          <ErrorBox err={err} />
        ) : (
          <p className="muted">Loading…</p>
        )}
        {op && <OpStatus op={op} />}
      </div>
    );
  }

  const deleting = !!vm.spec.deletion;
  const acts = deleting ? [] : vmActions(vm.spec.powerState, vm.status.powerState, (perm) => s.can(perm, project));
  // Migrate is offered to who may change the VM; a VM that cannot move now says why.
  const mayMigrate = !deleting && !vm.spec.provider && s.can('vm.update', project) && s.offers('POST /v1/vms/{name}/migrate');
  const noMigrate = whyNotMigrate(vm);
  const mayConsole = s.can('vm.console', project);
  const hint = serialHint(vm);
  const consoleRoles = s.policy.names.filter((r) => s.policy.allows(r, 'vm.console')).join(', ');
  return (
    <div className="vmpage">
      <p className="crumbs">
        <Link to={`/vms?project=${encodeURIComponent(project)}`}>Virtual machines</Link> / {project}
      </p>
      <div className="row">
        <h1>{vm.name}</h1>
        <span data-testid="vm-state" className={`state state-${vm.status.powerState}`} aria-label="Observed power state">
          {vm.status.powerState}
        </span>
        {vm.spec.powerState !== vm.status.powerState && !deleting && <span className="muted">→ {vm.spec.powerState}</span>}
        {deleting && <span className="state state-stopping">being deleted</span>}
        <div className="spacer" />
        <div className="actions" role="group" aria-label="Power actions">
          {acts.map((a) => (
            <button key={a} type="button" data-testid={`action-${a}`} className={a === 'delete' ? 'danger' : ''} onClick={() => (needsConfirm(a) ? setAsk(a) : void act(a))}>
              {title(a)}
            </button>
          ))}
          {mayMigrate && (
            <button type="button" data-testid="action-migrate" disabled={!!noMigrate} title={noMigrate ? `Cannot migrate: ${noMigrate}` : undefined} onClick={() => setMigrating(true)}>
              Migrate
            </button>
          )}
        </div>
      </div>
      <ErrorBox err={err} />
      {op && <OpStatus op={op} />}
      <MigrationLine vm={vm} />
      <Tabs label="VM views" tabs={tabs} current={tab} onSelect={(t) => navigate(url({ tab: t }), true)} />
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} className="card">
        {tab === 'summary' && (
          <>
            <Usage project={project} name={name} running={vm.status.powerState === 'running'} />
            <VMSummary vm={vm} canLease={s.can('vm.update', project) && !deleting} onLeased={onLeased} canChangeNICs={s.can('vm.update', project) && !deleting} />
          </>
        )}
        {(tab === 'console' || tab === 'serial') &&
          (mayConsole ? (
            <>
              {tab === 'console' && hint && (
                <div className="notice hint" role="note" data-testid="vnc-serial-hint">
                  <p>{hint}</p>
                  <button type="button" data-testid="open-serial" onClick={() => navigate(url({ tab: 'serial' }), true)}>
                    Open the Serial tab
                  </button>
                </div>
              )}
              <Suspense fallback={<p className="muted">Loading the console…</p>}>
                <Consoles kind={tab === 'console' ? 'vnc' : 'serial'} project={project} name={name} />
              </Suspense>
            </>
          ) : (
            <p className="muted" data-testid="console-denied">
              Your role in {project} does not open consoles ({consoleRoles || 'no project role does'}).
            </p>
          ))}
        {tab === 'snapshots' && <Snapshots project={project} name={name} canEdit={s.can('vm.update', project) && !deleting} />}
        {tab === 'volumes' && <VMVolumes project={project} name={name} canEdit={s.can('volume.manage', project) && !deleting} />}
      </div>
      {migrating && (
        <MigrateDialog
          vm={vm}
          onClose={() => setMigrating(false)}
          onStarted={(o) => {
            setMigrating(false);
            setStarted(o);
            navigate(url({ op: o.id }), true);
          }}
        />
      )}
      {ask && (
        <Confirm
          title={`${title(ask)} ${vm.name}?`}
          okLabel={title(ask)}
          danger={ask === 'delete'}
          body={
            <p>
              {ask === 'delete'
                ? `${vm.name} is stopped and deleted, with its disks. This cannot be undone.`
                : ask === 'restart'
                  ? `The guest of ${vm.name} is asked to shut down, then started again.`
                  : `The guest of ${vm.name} is asked to shut down; it is forced off if it does not in time.`}
            </p>
          }
          onOK={() => void act(ask)}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </div>
  );
}
