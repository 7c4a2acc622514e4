import { useEffect, useState } from 'react';
import { call, q, type VM } from '../api';
import { ErrorBox, ago } from '../ui';
import { leaseText } from '../lib/lease';
import { VMNICs } from './VMNICs';

const leaseChoices: [number, string][] = [
  [3600, '1 hour'],
  [8 * 3600, '8 hours'],
  [86400, '1 day'],
  [7 * 86400, '1 week'],
  [30 * 86400, '30 days'],
];

function Lease({ vm, canLease, onLeased }: { vm: VM; canLease: boolean; onLeased(v: VM): void }) {
  const [now, setNow] = useState(Date.now());
  const [secs, setSecs] = useState(String(leaseChoices[2][0]));
  const [err, setErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (!vm.spec.lease) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [vm.spec.lease]);
  const put = async (durationSeconds: number) => {
    setErr(undefined);
    setBusy(true);
    try {
      onLeased(await call<VM>('PUT', `/v1/vms/${encodeURIComponent(vm.name)}/lease${q({ project: vm.project })}`, { durationSeconds }));
    } catch (e) {
      setErr(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="lease" aria-labelledby="lease-h">
      <h2 id="lease-h">Lease</h2>
      <p data-testid="lease-countdown" aria-live="off">
        {leaseText(vm.spec.lease, now)}
      </p>
      {vm.spec.lease && (
        <p className="muted small">
          stops {new Date(vm.spec.lease.expiresAt).toLocaleString()}, deleted {new Date(vm.spec.lease.deleteAt).toLocaleString()}
        </p>
      )}
      {canLease && (
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            void put(Number(secs));
          }}
        >
          <label className="inline">
            {vm.spec.lease ? 'Renew for' : 'Set a lease of'}
            <select value={secs} onChange={(e) => setSecs(e.target.value)} data-testid="lease-duration">
              {leaseChoices.map(([v, l]) => (
                <option key={v} value={v}>
                  {l}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" disabled={busy} data-testid="lease-set">
            {vm.spec.lease ? 'Renew' : 'Set lease'}
          </button>
          {vm.spec.lease && (
            <button type="button" disabled={busy} onClick={() => void put(0)}>
              Remove lease
            </button>
          )}
        </form>
      )}
      <ErrorBox err={err} />
    </section>
  );
}

// HA shows and sets the VM's HA policy (restart on another host when its
// host is lost and fenced) and its last such restart.
function HA({ vm, canSet, onSet }: { vm: VM; canSet: boolean; onSet(v: VM): void }) {
  const [err, setErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const policy = vm.spec.ha || 'none';
  const put = async (ha: string) => {
    setErr(undefined);
    setBusy(true);
    try {
      onSet(await call<VM>('PUT', `/v1/vms/${encodeURIComponent(vm.name)}/ha${q({ project: vm.project })}`, { ha }));
    } catch (e) {
      setErr(e);
    } finally {
      setBusy(false);
    }
  };
  const r = vm.spec.haRestart;
  if (vm.spec.provider) return null;
  return (
    <section className="ha" aria-labelledby="ha-h">
      <h2 id="ha-h">High availability</h2>
      <p data-testid="vm-ha">
        {policy === 'restart'
          ? 'restart: when its host is lost, the VM is restarted on another host once that host is fenced'
          : 'none: the VM waits for its host'}
      </p>
      {r && (
        <p className="muted small" data-testid="vm-ha-restart">
          restarted from {r.from} on {r.to} at {new Date(r.at).toLocaleString()} (operation {r.operation})
        </p>
      )}
      {canSet && (
        <button type="button" disabled={busy} data-testid="vm-ha-set" onClick={() => void put(policy === 'restart' ? 'none' : 'restart')}>
          {policy === 'restart' ? 'Turn HA restart off' : 'Restart on another host when its host is lost'}
        </button>
      )}
      <ErrorBox err={err} />
    </section>
  );
}

export function VMSummary({ vm, canLease, onLeased, canChangeNICs = false }: { vm: VM; canLease: boolean; onLeased(v: VM): void; canChangeNICs?: boolean }) {
  const boot = vm.spec.boot?.kernel ? `kernel ${vm.spec.boot.kernel}${vm.spec.boot.initrd ? `, initrd ${vm.spec.boot.initrd}` : ''}${vm.spec.boot.cmdline ? ` (${vm.spec.boot.cmdline})` : ''}` : 'firmware, first disk';
  const p = vm.spec.provider;
  const rows: [string, string][] = [
    ['Desired state', vm.spec.powerState],
    ['Observed state', vm.status.powerState + (vm.status.reason ? ` (${vm.status.reason})` : '')],
    ['Host', vm.spec.host],
    ['Provider', p ? `${p.name}${p.type ? ` (${p.type})` : ''}${p.path ? ` · ${p.path}` : ''}` : 'Polyvisor'],
    ['vCPUs', String(vm.spec.vcpus)],
    ['Memory', `${vm.spec.memoryMiB} MiB`],
    ['Disks', (vm.spec.disks ?? []).map((d) => `${d.name}${d.image ? ` ← ${d.image}` : ''}${d.sizeMiB ? ` ${d.sizeMiB} MiB` : ''}`).join(', ')],
    ['Networks', (vm.spec.nics ?? []).map((n) => `${n.network}${n.port ? ` (port ${n.port}${n.ip ? `, ${n.ip}` : ''})` : ''}${n.mac ? ` ${n.mac}` : ''}`).join(', ')],
    ['IP addresses', vm.status.ips?.join(', ') ?? ''],
    ['Boot', p ? '' : boot],
    ['Firmware', p ? '' : vm.spec.boot?.firmware === 'efi' ? 'EFI (OVMF)' : 'BIOS (SeaBIOS)'],
    ['Driver', vm.status.driver ? `${vm.status.driver}${vm.status.pid ? `, pid ${vm.status.pid}` : ''}` : ''],
    ['Started', vm.status.powerState === 'running' && vm.status.startedAt ? ago(vm.status.startedAt) : ''],
    ['Created', vm.createdAt ? new Date(vm.createdAt).toLocaleString() : ''],
    ['Labels', Object.entries(vm.labels ?? {}).map(([k, v]) => (v ? `${k}=${v}` : k)).join(', ')],
  ];
  return (
    <>
      {vm.status.error && (
        <div className="error" role="alert">
          {vm.status.error.message}
        </div>
      )}
      <dl className="summary">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd data-testid={k === 'IP addresses' ? 'vm-ips' : undefined}>{v || '—'}</dd>
          </div>
        ))}
      </dl>
      <VMNICs vm={vm} canChange={canChangeNICs} />
      <HA vm={vm} canSet={canLease} onSet={onLeased} />
      <Lease vm={vm} canLease={canLease} onLeased={onLeased} />
    </>
  );
}
