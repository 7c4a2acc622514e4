// Migrations of VMs from other hypervisors: the list of the project's (or
// every project's) migrations with how each VM goes, and one migration's
// page. Both follow the event stream, on which the server publishes each
// change of a migration (about every second while one runs); they read
// the migrations again only when the stream reconnects having missed some.
import { useCallback, useEffect, useMemo, useState } from 'react';
import { call, listAll, q, scope, type VMMigration } from '../api';
import { useEvents, useResync } from '../events';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Link, navigate, useLocation } from '../router';
import { Confirm, ErrorBox, State, ago } from '../ui';
import { APIError } from '../lib/errors';
import { keyOf, newer } from '../lib/merge';
import { fromSearch, toSearch } from '../lib/urlstate';
import { bytes } from '../lib/units';
import { blocked, counts, countsText, eta, filterMigrations, mayCancel, mayStart, migrationOver, migrationPath, migrationStates, percent, phaseText, silentFor, sourceText, stateText, vmRows } from '../lib/v2v';

// shownMoving is how many copying VMs a row of the list details.
const shownMoving = 3;
const defaults = { state: '', q: '', all: '' };
const seg = encodeURIComponent;

// useNow re-renders every ms, for "reported 40s ago".
function useNow(ms: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

// MigrationActions starts a planned migration, cancels and deletes one,
// the last two confirmed.
export function MigrationActions(props: { m: VMMigration; onDone(deleted: boolean): void; onError(e: unknown): void }) {
  const s = useSession();
  const { m } = props;
  const [ask, setAsk] = useState<'cancel' | 'delete'>();
  const [busy, setBusy] = useState(false);
  const at = (verb: string) => `/v1/migrations/${seg(m.name)}${verb}${q({ project: m.project })}`;
  const act = async (what: 'start' | 'cancel' | 'delete') => {
    setAsk(undefined);
    setBusy(true);
    try {
      if (what === 'delete') await call<void>('DELETE', at(''));
      else await call<VMMigration>('POST', at(`/${what}`));
      props.onDone(what === 'delete');
    } catch (e) {
      props.onError(e);
    } finally {
      setBusy(false);
    }
  };
  const runnable = vmRows(m).some((v) => !blocked(v));
  return (
    <span className="actions">
      {mayStart(m) && s.can('vm.create', m.project) && (
        <button type="button" className="primary" data-testid={`migration-start-${m.name}`} disabled={busy || !runnable} title={runnable ? undefined : 'no VM of its plan can move'} onClick={() => void act('start')}>
          Start
        </button>
      )}
      {mayCancel(m) && s.can('vm.create', m.project) && (
        <button type="button" data-testid={`migration-cancel-${m.name}`} disabled={busy} onClick={() => setAsk('cancel')}>
          Cancel
        </button>
      )}
      {s.can('vm.delete', m.project) && (
        <button type="button" className="danger" data-testid={`migration-delete-${m.name}`} disabled={busy} onClick={() => setAsk('delete')}>
          Delete
        </button>
      )}
      {ask === 'cancel' && (
        <Confirm
          title={`Cancel migration ${m.name}?`}
          okLabel="Cancel the migration"
          danger
          body={<p>The copy stops. What it half-made (images, a VM not finished) is removed; the VMs it finished stay, and so do the source VMs.</p>}
          onOK={() => void act('cancel')}
          onCancel={() => setAsk(undefined)}
        />
      )}
      {ask === 'delete' && (
        <Confirm
          title={`Delete migration ${m.name}?`}
          okLabel="Delete the migration"
          danger
          body={
            <p>
              The record of {m.name} goes{migrationOver(m.status.state) ? '' : ', and its run is cancelled first'}. What it made but did not finish, its copies and uploads go too; the VMs it finished stay.
            </p>
          }
          onOK={() => void act('delete')}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </span>
  );
}

// VMProgressTable shows each VM of a migration: where it goes, its state,
// phase, bytes, rate and time left, and what its plan said it cannot do.
function VMProgressTable({ m }: { m: VMMigration }) {
  const rows = vmRows(m);
  if (rows.length === 0) return <p className="muted">{m.status.state === 'uploading' ? 'Its files are awaited: the plan is made once they are uploaded.' : 'Its plan is not made yet.'}</p>;
  return (
    <div className="tablewrap">
      <table data-testid="migration-vms">
        <thead>
          <tr>
            <th scope="col">VM</th>
            <th scope="col">Source</th>
            <th scope="col">Host</th>
            <th scope="col">State</th>
            <th scope="col">Progress</th>
            <th scope="col">To copy</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((st) => {
            const pct = percent(st);
            const why = st.plan?.blockers ?? [];
            return (
              <tr key={st.name} data-testid={`migration-vm-${st.name}`}>
                <td>{st.state === 'succeeded' && m.project ? <Link to={`/vms/${seg(m.project)}/${seg(st.name)}`}>{st.name}</Link> : st.name}</td>
                <td className="wrap">{st.sourceName}</td>
                <td>{st.host || st.plan?.host || m.spec.host || <span className="muted">scheduler</span>}</td>
                <td>
                  <State s={why.length && st.state !== 'succeeded' && st.state !== 'running' ? 'blocked' : st.state} />
                </td>
                <td className="wrap">
                  {st.state === 'running' && pct !== undefined && <progress max={100} value={pct} aria-label={`${st.name} ${st.phase ?? ''} progress`} />}{' '}
                  <span className={st.state === 'failed' ? 'alert-error' : undefined}>{phaseText(st)}</span>
                  {why.map((b, i) => (
                    <div key={i} className="small alert-error">
                      {b}
                    </div>
                  ))}
                  {(st.notes ?? []).map((n, i) => (
                    <div key={i} className="small muted">
                      {n}
                    </div>
                  ))}
                </td>
                <td className="num">{bytes(st.plan?.copyBytes)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

export function Migrations() {
  const s = useSession();
  const { search } = useLocation();
  const f = fromSearch(search, defaults);
  const all = f.all === '1';
  const [actErr, setActErr] = useState<unknown>();
  const now = useNow(5000);
  const live = useLiveList<VMMigration>(
    (signal) => listAll<VMMigration>('/v1/migrations', scope(s.project, all), signal),
    (e) => (e.migration && (all || e.migration.project === s.project) ? e.migration : undefined),
    keyOf,
    [s.project, all],
  );
  const { reload } = live;
  const rows = useMemo(() => filterMigrations(live.items, f.state, f.q), [live.items, f.state, f.q]);
  const set = (k: keyof typeof defaults) => (v: string) => navigate('/migrations' + toSearch({ ...fromSearch(location.search, defaults), [k]: v }, defaults), true);

  return (
    <div>
      <div className="row">
        <h1>Migrations</h1>
        <span className="muted">{all ? 'in all your projects' : `in ${s.project}`}: VMs moved from other hypervisors</span>
        <div className="spacer" />
        {s.can('vm.create') && (
          <Link to="/migrations/import" className="button primary" data-testid="import-vms-button">
            Import VMs
          </Link>
        )}
      </div>
      <form className="row filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label className="inline">
          State
          <select data-testid="migrations-filter-state" value={f.state} onChange={(e) => set('state')(e.target.value)}>
            <option value="">any</option>
            {[...migrationStates, 'cancelling'].map((x) => (
              <option key={x} value={x}>
                {x}
              </option>
            ))}
          </select>
        </label>
        <input type="search" aria-label="Search by name, source or host" placeholder="name, source or host" value={f.q} onChange={(e) => set('q')(e.target.value)} />
        <label className="inline">
          <input type="checkbox" checked={all} onChange={(e) => set('all')(e.target.checked ? '1' : '')} /> All projects
        </label>
        <span className="muted" aria-live="polite" data-testid="migrations-count" data-loaded={live.loaded}>
          {live.loaded ? `${rows.length} of ${live.items.length}` : 'loading…'}
        </span>
      </form>
      <ErrorBox err={live.error ?? actErr} testId="migrations-error" />
      <div className="tablewrap">
        <table data-testid="migrations-table">
          <thead>
            <tr>
              <th scope="col">Migration</th>
              {all && <th scope="col">Project</th>}
              <th scope="col">State</th>
              <th scope="col">VMs</th>
              <th scope="col">Source</th>
              <th scope="col">To host</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((m) => {
              const c = counts(m);
              const silent = silentFor(m, now);
              const moving = vmRows(m).filter((v) => v.state === 'running');
              return (
                <tr key={keyOf(m)} data-testid={`migration-row-${m.name}`}>
                  <td>
                    <Link to={migrationPath(m)}>{m.name}</Link>
                  </td>
                  {all && <td>{m.project}</td>}
                  <td>
                    <State s={stateText(m)} />
                    {silent > 0 && <div className="small alert-warn">no progress for {silent}s</div>}
                  </td>
                  <td className="wrap">
                    <progress max={Math.max(1, c.total)} value={c.succeeded} aria-label={`${m.name}: VMs moved`} /> {countsText(c)}
                    {moving.slice(0, shownMoving).map((v) => (
                      <div key={v.name} className="small" data-testid={`migration-progress-${m.name}-${v.name}`}>
                        {v.name}: {phaseText(v)}
                      </div>
                    ))}
                    {moving.length > shownMoving && <div className="small muted">and {moving.length - shownMoving} more copying</div>}
                    {m.status.error && <div className="small alert-error">{m.status.error}</div>}
                  </td>
                  <td className="wrap">{sourceText(m.spec.source)}</td>
                  <td>{m.spec.host || <span className="muted">scheduler</span>}</td>
                  <td className="muted">{ago(m.createdAt, now)}</td>
                  <td>
                    <MigrationActions
                      m={m}
                      onDone={() => {
                        setActErr(undefined);
                        reload();
                      }}
                      onError={setActErr}
                    />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
        {live.loaded && rows.length === 0 && <p className="muted empty">No migrations{f.q || f.state ? ' match' : ' yet'}.</p>}
      </div>
    </div>
  );
}

// MigrationPage is one migration: its record and each VM's progress.
export function MigrationPage({ project, name }: { project: string; name: string }) {
  const [m, setM] = useState<VMMigration>();
  const [err, setErr] = useState<unknown>();
  const [gone, setGone] = useState(false);
  const now = useNow(5000);
  const path = `/v1/migrations/${seg(name)}${q({ project })}`;
  const load = useCallback(() => {
    call<VMMigration>('GET', path).then(
      (x) => {
        setM((cur) => (cur && !newer(cur, x) ? cur : x));
        setErr(undefined);
      },
      (e) => (e instanceof APIError && e.status === 404 ? setGone(true) : setErr(e)),
    );
  }, [path]);
  useEffect(load, [load]);
  useResync(load);
  useEvents((e) => {
    const x = e.migration;
    if (!x || x.project !== project || x.name !== name) return;
    if (e.action === 'deleted') setGone(true);
    else setM((cur) => (cur && !newer(cur, x) ? cur : x));
  });

  const back = (
    <p className="crumbs">
      <Link to="/migrations">Migrations</Link>
    </p>
  );
  if (!m) {
    return (
      <div>
        {back}
        {gone ? <p className="card">There is no migration {name} in {project} (anymore).</p> : err ? <ErrorBox err={err} /> : <p className="muted">Loading…</p>}
      </div>
    );
  }
  const c = counts(m);
  const silent = silentFor(m, now);
  const when = (t?: string) => (t ? `${ago(t, now)} (${new Date(t).toLocaleString()})` : '');
  const nets = Object.entries(m.spec.networkMap ?? {})
    .map(([k, v]) => `${k === '*' ? 'any other' : k} → ${v}`)
    .join(', ');
  const facts: [string, string, string?][] = [
    ['Project', m.project ?? ''],
    ['Source', sourceText(m.spec.source), 'migration-source'],
    ['To host', m.spec.host || 'placed by the scheduler'],
    ['Networks', nets],
    ['VMs', countsText(c), 'migration-counts'],
    ['To copy', bytes(m.status.copyBytes)],
    ['Estimated time', eta(m.status.estimatedSeconds)],
    ['At once', `${m.spec.parallel} VM${m.spec.parallel === 1 ? '' : 's'}`],
    ['Source VMs afterwards', m.spec.source.kind === 'provider' ? ({ poweroff: 'powered off', delete: 'deleted' } as Record<string, string>)[m.spec.sourceDisposition ?? ''] ?? 'kept' : ''],
    ['Server', m.status.server ?? ''],
    ['Created by', m.status.createdBy ?? ''],
    ['Created', when(m.createdAt)],
    ['Started', when(m.status.startedAt)],
    ['Finished', when(m.status.finishedAt)],
    ['Last progress', m.status.reportedAt ? ago(m.status.reportedAt, now) : ''],
  ];
  return (
    <div>
      {back}
      <div className="row">
        <h1>{m.name}</h1>
        <span data-testid="migration-state">
          <State s={stateText(m)} />
        </span>
        <div className="spacer" />
        <MigrationActions
          m={m}
          onDone={(deleted) => {
            if (deleted) navigate('/migrations');
            else load();
          }}
          onError={setErr}
        />
      </div>
      {silent > 0 && (
        <p className="hint" data-testid="migration-silent">
          No progress was written for {silent} seconds: the server running it may have stopped. Another server takes it over and resumes it from its checkpoints.
        </p>
      )}
      {m.status.error && (
        <div className="error" data-testid="migration-error">
          {m.status.error}
        </div>
      )}
      <ErrorBox err={err} testId="migration-action-error" />
      <section className="card">
        <dl className="summary">
          {facts.map(([k, v, id]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd data-testid={id}>{v || '—'}</dd>
            </div>
          ))}
        </dl>
      </section>
      <h2>VMs</h2>
      <VMProgressTable m={m} />
    </div>
  );
}
