import { useCallback, useEffect, useState } from 'react';
import { call, q, type Operation, type VM } from '../api';
import { useEvents } from '../events';
import { useSession } from '../session';
import { navigate, useLocation } from '../router';
import { Confirm, ErrorBox, State, ago } from '../ui';
import { leaseText } from '../lib/lease';
import { SerialConsole, VNCConsole } from '../consoles';
import { Snapshots } from './Snapshots';
import { Usage } from './Usage';

type Act = 'start' | 'stop' | 'restart' | 'pause' | 'resume' | 'delete';
const confirmNeeded: Act[] = ['stop', 'restart', 'delete'];

function actionsFor(vm: VM): Act[] {
  switch (vm.spec.powerState) {
    case 'running':
      return ['stop', 'restart', 'pause', 'delete'];
    case 'paused':
      return ['resume', 'stop', 'delete'];
    default:
      return ['start', 'delete'];
  }
}

export function VMPage({ project, name }: { project: string; name: string }) {
  const s = useSession();
  const { search } = useLocation();
  const tab = new URLSearchParams(search).get('tab') ?? 'summary';
  const [vm, setVM] = useState<VM>();
  const [err, setErr] = useState<unknown>();
  const [ask, setAsk] = useState<Act>();
  const [op, setOp] = useState<Operation>();
  const base = `/v1/vms/${encodeURIComponent(name)}`;
  const pq = q({ project });

  const load = useCallback(() => call<VM>('GET', base + pq).then(setVM, setErr), [base, pq]);
  useEffect(() => {
    void load();
  }, [load]);
  useEvents((e) => {
    if (e.vm && e.vm.name === name && e.vm.project === project) {
      if (e.action === 'deleted') navigate('/vms');
      else setVM(e.vm);
    }
    if (e.operation && op && e.operation.id === op.id) setOp(e.operation);
  });

  async function act(a: Act) {
    setAsk(undefined);
    setErr(undefined);
    try {
      const o = a === 'delete' ? await call<Operation>('DELETE', base + pq) : await call<Operation>('POST', `${base}/${a}${pq}`);
      setOp(o);
      if (a === 'delete') navigate('/vms');
    } catch (x) {
      setErr(x);
    }
  }

  const setTab = (t: string) => navigate(`/vms/${encodeURIComponent(project)}/${encodeURIComponent(name)}${t === 'summary' ? '' : `?tab=${t}`}`, true);
  if (!vm) return <div>{err ? <ErrorBox err={err} /> : 'Loading…'}</div>;
  const mayPower = s.can('power', project);
  const tabs: [string, string][] = [
    ['summary', 'Summary'],
    ['console', 'Console'],
    ['serial', 'Serial'],
    ['snapshots', 'Snapshots'],
  ];
  return (
    <div className="vmpage">
      <div className="row">
        <h1>
          {vm.name} <span className="muted">in {project}</span>
        </h1>
        <span data-testid="vm-state" className={`state state-${vm.status.powerState}`}>
          {vm.status.powerState}
        </span>
        <div className="spacer" />
        {mayPower &&
          actionsFor(vm)
            .filter((a) => a !== 'delete' || s.can('delete', project))
            .map((a) => (
              <button key={a} data-testid={`action-${a}`} className={a === 'delete' ? 'danger' : ''} onClick={() => (confirmNeeded.includes(a) ? setAsk(a) : void act(a))}>
                {a[0].toUpperCase() + a.slice(1)}
              </button>
            ))}
      </div>
      <ErrorBox err={err} />
      {op && (
        <p className="muted" aria-live="polite">
          {op.kind}: <State s={op.status} /> {op.progress}% {op.message} {op.error?.message}
        </p>
      )}
      <div role="tablist" className="tabs">
        {tabs.map(([id, label]) => (
          <button key={id} role="tab" aria-selected={tab === id} data-testid={`tab-${id}`} onClick={() => setTab(id)}>
            {label}
          </button>
        ))}
      </div>
      <div role="tabpanel" className="card">
        {tab === 'summary' && (
          <>
            <Usage project={project} name={name} running={vm.status.powerState === 'running'} />
            <Summary vm={vm} />
          </>
        )}
        {tab === 'console' && (s.can('console', project) ? <VNCConsole project={project} name={name} /> : <p>Your role cannot open consoles here.</p>)}
        {tab === 'serial' && (s.can('console', project) ? <SerialConsole project={project} name={name} /> : <p>Your role cannot open consoles here.</p>)}
        {tab === 'snapshots' && <Snapshots project={project} name={name} canEdit={s.can('update', project)} />}
      </div>
      {ask && (
        <Confirm
          title={ask[0].toUpperCase() + ask.slice(1)}
          danger={ask === 'delete'}
          body={<p>{ask === 'delete' ? `Delete ${vm.name} and its disks?` : `${ask[0].toUpperCase() + ask.slice(1)} ${vm.name}?`}</p>}
          onOK={() => void act(ask)}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </div>
  );
}

function Summary({ vm }: { vm: VM }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  const rows: [string, string][] = [
    ['Desired state', vm.spec.powerState],
    ['Observed state', vm.status.powerState + (vm.status.reason ? ` (${vm.status.reason})` : '')],
    ['Host', vm.spec.host],
    ['Provider', vm.spec.provider?.name ?? 'Polyvisor'],
    ['vCPUs', String(vm.spec.vcpus)],
    ['Memory', `${vm.spec.memoryMiB} MiB`],
    ['Disks', (vm.spec.disks ?? []).map((d) => `${d.name}${d.image ? ` ← ${d.image}` : ''}${d.sizeMiB ? ` ${d.sizeMiB} MiB` : ''}`).join(', ')],
    ['Networks', (vm.spec.nics ?? []).map((n) => `${n.network} ${n.mac ?? ''}`).join(', ')],
    ['IPs', vm.status.ips?.join(', ') ?? ''],
    ['Lease', leaseText(vm.spec.lease, now)],
    ['Started', vm.status.startedAt ? ago(vm.status.startedAt) : ''],
    ['Labels', Object.entries(vm.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ')],
  ];
  return (
    <>
      {vm.status.error && <div className="error">{vm.status.error.message}</div>}
      <dl className="summary">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v || '—'}</dd>
          </div>
        ))}
      </dl>
    </>
  );
}
