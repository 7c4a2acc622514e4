import { useCallback, useEffect, useState } from 'react';
import { adminRoutes, call, cordonHost, deleteHost, drainHost, drainOf, revokeHost, type Host, type Operation } from '../api';
import { useEvents, useResync } from '../events';
import { useSession } from '../session';
import { Link, navigate } from '../router';
import { CapacityBar, Confirm, ErrorBox, State, ago } from '../ui';
import { APIError } from '../lib/errors';
import { carryServerView, hostUse } from '../lib/capacity';
import { mib } from '../lib/units';
import { newer } from '../lib/merge';
import { drainSummary } from '../lib/migrate';
import { isDone } from '../lib/ops';
import { Accel } from './Hosts';
import { UsageChart } from './UsageChart';

type Ask = 'revoke' | 'delete' | 'drain';

export function HostPage({ name }: { name: string }) {
  const s = useSession();
  const [h, setH] = useState<Host>();
  const [gone, setGone] = useState(false);
  const [err, setErr] = useState<unknown>();
  const [actErr, setActErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const [ask, setAsk] = useState<Ask>();
  const [now, setNow] = useState(Date.now());
  const [drainOp, setDrainOp] = useState<Operation>();
  const draining = !!drainOp && !isDone(drainOp);
  const drained = drainOf(drainOp);
  const path = `/v1/hosts/${encodeURIComponent(name)}`;

  const load = useCallback(() => {
    call<Host>('GET', path).then(
      (x) => {
        setH((cur) => (cur && !newer(cur, x) ? cur : x));
        setGone(false);
      },
      (e) => {
        if (e instanceof APIError && e.status === 404) setGone(true);
        else setErr(e);
      },
    );
  }, [path]);
  useEffect(() => {
    setH(undefined);
    load();
    const t = setInterval(() => setNow(Date.now()), 5000);
    return () => clearInterval(t);
  }, [load]);
  useResync(load);
  useEvents((e) => {
    if (e.type === 'host' && e.object.name === name) {
      if (e.action === 'deleted') setGone(true);
      else if (e.host) {
        setH((cur) => (cur && !newer(cur, e.host!) ? cur : carryServerView(cur, e.host!)));
        load(); // for the allocation, which events do not carry
      }
    } else if (e.type === 'vm' && e.vm?.spec.host === name && e.action !== 'updated') load();
  });

  const act = async (f: () => Promise<Host | void>, after?: () => void) => {
    setActErr(undefined);
    setAsk(undefined);
    setBusy(true);
    try {
      const x = await f();
      if (x) setH(x);
      after?.();
    } catch (e) {
      setActErr(e);
    } finally {
      setBusy(false);
    }
  };

  // A drain is an operation that may take minutes: its progress and each
  // move are read from it every second until it ends.
  useEffect(() => {
    if (!drainOp || isDone(drainOp)) return;
    const t = setTimeout(() => {
      call<Operation>('GET', `/v1/operations/${encodeURIComponent(drainOp.id)}`).then(
        (o) => {
          setDrainOp(o);
          if (isDone(o)) load();
        },
        (e) => setActErr(e),
      );
    }, 1000);
    return () => clearTimeout(t);
  }, [drainOp, load]);
  const drain = async (name: string) => {
    setActErr(undefined);
    setAsk(undefined);
    setDrainOp(undefined);
    try {
      setDrainOp(await drainHost(name));
    } catch (e) {
      setActErr(e);
    }
  };
  const cancelDrain = async () => {
    if (!drainOp) return;
    try {
      setDrainOp(await call<Operation>('DELETE', `/v1/operations/${encodeURIComponent(drainOp.id)}`));
      load();
    } catch (e) {
      setActErr(e);
    }
  };

  if (!h) {
    return (
      <div>
        <p>
          <Link to="/hosts">← Hosts</Link>
        </p>
        {gone ? <p className="card">There is no host {name} (anymore).</p> : err ? <ErrorBox err={err} /> : <p className="muted">Loading…</p>}
      </div>
    );
  }
  const u = hostUse(h);
  const own = !h.provider;
  const fenceText = (h: Host) => {
    const t = h.fenceTimeoutMS ? `T_fence ${h.fenceTimeoutMS / 1000}s` : 'HA restarts off';
    const f = h.fence;
    if (!f) return `${t}; not fenced`;
    const when = (x?: string) => (x ? new Date(x).toLocaleString() : '');
    switch (f.state) {
      case 'pending':
        return `${t}; silent since ${when(f.lastHeartbeat)}: its HA VMs restart elsewhere from ${when(f.deadline)} if its keeper was armed, or once the fence hook reports it off${f.hook ? ` (hook: ${f.hook})` : ''}`;
      case 'unknown':
        return `${t}; silent since ${when(f.lastHeartbeat)}, not known to be powered off: its HA VMs are not restarted elsewhere${f.hook ? ` (hook: ${f.hook})` : ''}`;
      case 'fenced':
        return `${t}; fenced by ${f.by} at ${when(f.fencedAt)}${f.vms?.length ? `, restarted elsewhere: ${f.vms.join(', ')}` : ''}`;
      default:
        return `${t}; back at ${when(f.returnedAt)} after being fenced at ${when(f.fencedAt)}${f.vms?.length ? ` (${f.vms.join(', ')} restarted elsewhere)` : ''}`;
    }
  };
  const admin = s.superadmin && own;
  const st = h.status;
  const rows: [string, string, string?][] = [
    ['State', st.state, 'host-state'],
    ['Scheduling', h.spec?.unschedulable ? 'cordoned: no new VMs are placed here' : 'new VMs may be placed here', 'host-schedulable'],
    ['Fencing', own ? fenceText(h) : '', 'host-fence'],
    ['Keeper', own && st.keeper ? `${st.keeper.armed ? 'armed' : 'not armed'}${st.keeper.message ? ` (${st.keeper.message})` : ''}${st.keeper.lastFired ? `; last fired ${new Date(st.keeper.lastFired).toLocaleString()}` : ''}` : '', 'host-keeper'],
    ['CPUs', String(st.cpus)],
    ['Memory', mib(st.memoryMiB)],
    ['Disk', st.diskTotalMiB ? `${mib(st.diskFreeMiB ?? 0)} free of ${mib(st.diskTotalMiB)}` : ''],
    ['Drivers', (st.drivers ?? []).join(', '), 'host-drivers'],
    ['QEMU', st.qemuVersion ?? ''],
    ['Agent', st.agentVersion ?? ''],
    ['Address', st.address ?? ''],
    ['Heartbeat', own && st.lastHeartbeat ? `${ago(st.lastHeartbeat, now)} (${new Date(st.lastHeartbeat).toLocaleString()})` : '', 'host-heartbeat'],
    ['Provider', h.provider ? `${h.provider.name} (${h.provider.type})${h.provider.path ? ` · ${h.provider.path}` : ''}` : 'none: a Polyvisor agent runs it'],
    ['Joined', h.createdAt ? new Date(h.createdAt).toLocaleString() : ''],
  ];
  return (
    <div>
      <p className="crumbs">
        <Link to="/hosts">Hosts</Link>
      </p>
      <div className="row">
        <h1>{h.name}</h1>
        <State s={st.state} />
        {h.spec?.unschedulable && <span className="state state-paused">cordoned</span>}
        <div className="spacer" />
        {admin && (
          <div className="actions" role="group" aria-label="Host actions">
            {s.offers(h.spec?.unschedulable ? adminRoutes.hostUncordon : adminRoutes.hostCordon) && (
              <button type="button" data-testid={h.spec?.unschedulable ? 'host-uncordon' : 'host-cordon'} disabled={busy} onClick={() => void act(() => cordonHost(h.name, !h.spec?.unschedulable))}>
                {h.spec?.unschedulable ? 'Uncordon' : 'Cordon'}
              </button>
            )}
            {s.offers(adminRoutes.hostDrain) && (
              <button type="button" data-testid="host-drain" disabled={busy || draining} onClick={() => setAsk('drain')}>
                {draining ? 'Draining…' : 'Drain'}
              </button>
            )}
            {s.offers(adminRoutes.hostRevoke) && (
              <button type="button" className="danger" data-testid="host-revoke" disabled={busy} onClick={() => setAsk('revoke')}>
                Revoke credentials
              </button>
            )}
            {s.offers(adminRoutes.hostDelete) && (
              <button type="button" className="danger" data-testid="host-delete" disabled={busy} onClick={() => setAsk('delete')}>
                Delete
              </button>
            )}
          </div>
        )}
      </div>
      <ErrorBox err={actErr} testId="host-error" />
      {draining && drainOp && (
        <p className="notice" role="status" data-testid="host-draining">
          Draining {h.name}: its VMs move to other hosts one after another (running ones live, stopped ones with their disks copied).{' '}
          <progress max={100} value={drainOp.progress} aria-label="drain progress" /> {drainOp.progress}%
          {drainOp.message && <span className="muted"> · {drainOp.message}</span>}{' '}
          <button type="button" data-testid="host-drain-cancel" onClick={() => void cancelDrain()}>
            Cancel drain
          </button>
        </p>
      )}
      {drained && drained.host === h.name && (
        <section className="card" aria-labelledby="drain-h" data-testid="host-drain-result">
          <h2 id="drain-h">Drain</h2>
          {drainOp && isDone(drainOp) && <p data-testid="host-drain-summary">{drainSummary(drained.host, drained.moves)}</p>}
          {drainOp?.status === 'cancelled' && <p className="muted">The drain was cancelled: the VMs not yet moved stay.</p>}
          {(drained.moves?.length ?? 0) > 0 && (
            <table>
              <thead>
                <tr>
                  <th>VM</th>
                  <th>Outcome</th>
                  <th>To</th>
                  <th>Why not</th>
                </tr>
              </thead>
              <tbody>
                {drained.moves!.map((m) => {
                  const [project, vm] = m.vm.split('/');
                  return (
                    <tr key={m.vm} data-testid="drain-move">
                      <td>{vm ? <Link to={`/vms/${encodeURIComponent(project)}/${encodeURIComponent(vm)}`}>{m.vm}</Link> : m.vm}</td>
                      <td>
                        <State s={m.outcome} />
                      </td>
                      <td>{m.target ?? '—'}</td>
                      <td>{m.error ?? ''}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )}
        </section>
      )}
      <section className="card" aria-labelledby="accel-h">
        <h2 id="accel-h">Accelerator</h2>
        <p data-testid="host-accel">
          <Accel h={h} />
        </p>
        {own && !st.accelReason && <p className="muted small">The host's agent does not say why (an older agent).</p>}
      </section>
      <section className="card" aria-labelledby="cap-h">
        <h2 id="cap-h">Capacity and allocation</h2>
        <CapacityBar label="vCPUs" use={u.vcpus} testId="host-vcpus" />
        <CapacityBar label="Memory" use={u.memory} fmt={mib} testId="host-memory" />
        <p className="small">
          <Link to={`/vms?all=1&host=${encodeURIComponent(h.name)}`}>{st.allocated?.vms ?? 0} VMs placed here</Link>
        </p>
      </section>
      {admin && <UsageChart kind="hosts" name={h.name} />}
      <section className="card">
        <dl className="summary">
          {rows.map(([k, v, id]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd data-testid={id}>{v || '—'}</dd>
            </div>
          ))}
        </dl>
      </section>
      {ask && (
        <Confirm
          title={ask === 'revoke' ? `Revoke the credentials of ${h.name}?` : ask === 'drain' ? `Drain ${h.name}?` : `Delete host ${h.name}?`}
          okLabel={ask === 'revoke' ? 'Revoke' : ask === 'drain' ? 'Drain' : 'Delete'}
          danger={ask !== 'drain'}
          body={
            <p>
              {ask === 'revoke'
                ? `The agent of ${h.name} can no longer act for it: its token stops working and the host is marked not ready. It may join again with a new join token.`
                : ask === 'drain'
                  ? `${h.name} is cordoned, then each running VM placed on it migrates live to the scheduler's choice, one after another. A stopped or paused VM, or one with volumes attached, stays (the result says why). ${h.name} stays cordoned afterwards.`
                  : `${h.name} and its credentials are removed. The API refuses while VMs are placed on it.`}
            </p>
          }
          onOK={() => void (ask === 'revoke' ? act(() => revokeHost(h.name)) : ask === 'drain' ? drain(h.name) : act(() => deleteHost(h.name), () => navigate('/hosts')))}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </div>
  );
}
