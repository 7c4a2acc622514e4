// Migrations of VMs from other hypervisors: the list of the project's (or
// every project's) migrations with how each VM goes, and one migration's
// page. A running migration is read again every two seconds (its runner
// reports as often); operations' events bring a change sooner.
import { useCallback, useEffect, useMemo, useState } from 'react';
import { call, listAll, q, scope, type VMMigration } from '../api';
import { useLiveList } from '../live';
import { useEvents, useResync } from '../events';
import { useSession } from '../session';
import { Link, navigate, useLocation } from '../router';
import { Confirm, ErrorBox, State, ago } from '../ui';
import { APIError } from '../lib/errors';
import { keyOf, newer } from '../lib/merge';
import { fromSearch, toSearch } from '../lib/urlstate';
import { bytes } from '../lib/units';
import { counts, countsText, filterMigrations, mayCancel, mayDelete, migrationOver, migrationPath, migrationStates, percent, phaseText, silentFor, stateText, vmRows } from '../lib/v2v';

const activeMs = 2000;
const idleMs = 30_000;
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

// MigrationActions cancels and deletes one migration, each confirmed.
function MigrationActions(props: { m: VMMigration; onDone(deleted: boolean): void; onError(e: unknown): void }) {
  const s = useSession();
  const { m } = props;
  const [ask, setAsk] = useState<'cancel' | 'delete'>();
  const path = `/v1/migrations/${seg(m.name)}${q({ project: m.project })}`;
  const act = async (what: 'cancel' | 'delete') => {
    setAsk(undefined);
    try {
      if (what === 'cancel') await call<VMMigration>('POST', `/v1/migrations/${seg(m.name)}/cancel${q({ project: m.project })}`);
      else await call<void>('DELETE', path);
      props.onDone(what === 'delete');
    } catch (e) {
      props.onError(e);
    }
  };
  return (
    <span className="actions">
      {mayCancel(m) && s.can('vm.create', m.project) && (
        <button type="button" data-testid={`migration-cancel-${m.name}`} onClick={() => setAsk('cancel')}>
          Cancel
        </button>
      )}
      {mayDelete(m) && s.can('vm.delete', m.project) && (
        <button type="button" className="danger" data-testid={`migration-delete-${m.name}`} onClick={() => setAsk('delete')}>
          Delete
        </button>
      )}
      {ask === 'cancel' && (
        <Confirm
          title={`Cancel migration ${m.name}?`}
          okLabel="Cancel the migration"
          danger
          body={<p>The copy stops at its next report. What it copied is kept, so that a later run resumes; VMs already moved stay, and so do the sources.</p>}
          onOK={() => void act('cancel')}
          onCancel={() => setAsk(undefined)}
        />
      )}
      {ask === 'delete' && (
        <Confirm
          title={`Delete migration ${m.name}?`}
          okLabel="Delete the record"
          danger
          body={<p>The record of {m.name} goes. The VMs, images and copies it made stay.</p>}
          onOK={() => void act('delete')}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </span>
  );
}

// VMProgressTable shows each VM of a migration: its state, phase, bytes,
// rate and time left.
function VMProgressTable({ m }: { m: VMMigration }) {
  const rows = vmRows(m);
  return (
    <div className="tablewrap">
      <table data-testid="migration-vms">
        <thead>
          <tr>
            <th scope="col">VM</th>
            <th scope="col">Source</th>
            <th scope="col">State</th>
            <th scope="col">Progress</th>
            <th scope="col">To copy</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(({ vm, st }) => {
            const pct = percent(st);
            return (
              <tr key={vm.name} data-testid={`migration-vm-${vm.name}`}>
                <td>{st.state === 'succeeded' && m.project ? <Link to={`/vms/${seg(m.project)}/${seg(vm.name)}`}>{vm.name}</Link> : vm.name}</td>
                <td className="wrap">{vm.sourceName}</td>
                <td>
                  <State s={st.state} />
                </td>
                <td className="wrap">
                  {st.state === 'running' && pct !== undefined && <progress max={100} value={pct} aria-label={`${vm.name} ${st.phase ?? ''} progress`} />} <span className={st.state === 'failed' ? 'alert-error' : undefined}>{phaseText(st)}</span>
                </td>
                <td className="num">{bytes(vm.copyBytes)}</td>
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
  const live = useLiveList<VMMigration>((signal) => listAll<VMMigration>('/v1/migrations', scope(s.project, all), signal), () => undefined, keyOf, [s.project, all]);
  const active = live.items.some((m) => !migrationOver(m.status.state));
  const { reload } = live;
  useEffect(() => {
    const t = setInterval(reload, active ? activeMs : idleMs);
    return () => clearInterval(t);
  }, [active, reload]);
  useEvents((e) => {
    // A migration's run is an operation: its change is read at once.
    if (e.operation?.target.kind === 'migration' && active) reload();
  });
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
              return (
                <tr key={keyOf(m)} data-testid={`migration-row-${m.name}`}>
                  <td>
                    <Link to={migrationPath(m)}>{m.name}</Link>
                  </td>
                  {all && <td>{m.project}</td>}
                  <td>
                    <State s={stateText(m)} />
                    {silent > 0 && <div className="small alert-warn">no report for {silent}s</div>}
                  </td>
                  <td className="wrap">
                    <progress max={Math.max(1, c.total)} value={c.succeeded} aria-label={`${m.name}: VMs moved`} /> {countsText(c)}
                    {m.status.error && <div className="small alert-error">{m.status.error}</div>}
                  </td>
                  <td className="wrap">{m.spec.source}</td>
                  <td>{m.spec.host}</td>
                  <td className="muted">{ago(m.createdAt, now)}</td>
                  <td>
                    <MigrationActions m={m} onDone={() => reload()} onError={setActErr} />
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
  const over = m ? migrationOver(m.status.state) : false;
  useEffect(() => {
    if (gone) return;
    const t = setInterval(load, over ? idleMs : activeMs);
    return () => clearInterval(t);
  }, [load, over, gone]);
  useEvents((e) => {
    if (e.operation?.target.kind === 'migration' && e.operation.target.name === name && !over) load();
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
  const total = (m.spec.vms ?? []).reduce((a, v) => a + (v.copyBytes || 0), 0);
  const facts: [string, string, string?][] = [
    ['Project', m.project ?? ''],
    ['Source', m.spec.source, 'migration-source'],
    ['To host', m.spec.host],
    ['VMs', countsText(c), 'migration-counts'],
    ['To copy', bytes(total)],
    ['At once', `${m.spec.parallel} VM${m.spec.parallel === 1 ? '' : 's'}`],
    ['Runner', [m.status.runner, m.status.runnerUser ? `(user ${m.status.runnerUser})` : ''].filter(Boolean).join(' ')],
    ['Last report', m.status.reportedAt ? ago(m.status.reportedAt, now) : 'none yet'],
    ['Created', m.createdAt ? new Date(m.createdAt).toLocaleString() : ''],
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
          Its runner has not reported for {silent} seconds: it may have stopped. Cancel the migration to delete its record; a new run resumes from what was copied.
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
