import { useCallback, useEffect, useState } from 'react';
import { call, type InventoryItem, type Provider, type ProviderInventory } from '../api';
import { useEvents, useResync } from '../events';
import { useSession } from '../session';
import { Link, navigate } from '../router';
import { Confirm, ErrorBox, State, ago } from '../ui';
import { APIError } from '../lib/errors';
import { newer } from '../lib/merge';
import { bytes } from '../lib/units';

function Items({ title, items, testId }: { title: string; items: InventoryItem[] | null | undefined; testId: string }) {
  const l = items ?? [];
  const sized = l.some((i) => i.capacityBytes);
  return (
    <section className="card" aria-label={title} data-testid={testId}>
      <h3>
        {title} <span className="muted">({l.length})</span>
      </h3>
      {l.length === 0 ? (
        <p className="muted">None.</p>
      ) : (
        <table className="compact">
          <tbody>
            {l.map((i) => (
              <tr key={i.id}>
                <td>{i.name}</td>
                <td className="muted">{i.datacenter}</td>
                {sized && <td className="wrap num">{i.capacityBytes ? `${bytes(i.freeBytes)} free of ${bytes(i.capacityBytes)}` : ''}</td>}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function ProviderPage({ name }: { name: string }) {
  const s = useSession();
  const [p, setP] = useState<Provider>();
  const [inv, setInv] = useState<ProviderInventory>();
  const [invErr, setInvErr] = useState<unknown>();
  const [gone, setGone] = useState(false);
  const [err, setErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const [ask, setAsk] = useState(false);
  const path = `/v1/providers/${encodeURIComponent(name)}`;
  const load = useCallback(() => {
    call<Provider>('GET', path).then(
      (x) => setP((cur) => (cur && !newer(cur, x) ? cur : x)),
      (e) => (e instanceof APIError && e.status === 404 ? setGone(true) : setErr(e)),
    );
    call<ProviderInventory>('GET', `${path}/inventory`).then(
      (x) => {
        setInv(x);
        setInvErr(undefined);
      },
      setInvErr,
    );
  }, [path]);
  useEffect(load, [load]);
  useResync(load);
  useEvents((e) => {
    if (e.type !== 'provider' || e.object.name !== name) return;
    if (e.action === 'deleted') setGone(true);
    else if (e.provider) {
      const next = e.provider;
      setP((cur) => (cur && !newer(cur, next) ? cur : next));
      if (next.status.lastSync !== p?.status.lastSync) load();
    }
  });

  const refresh = async () => {
    setErr(undefined);
    setBusy(true);
    try {
      setP(await call<Provider>('POST', `${path}/refresh`));
      load();
    } catch (e) {
      setErr(e);
    } finally {
      setBusy(false);
    }
  };
  const remove = async () => {
    setAsk(false);
    setErr(undefined);
    try {
      await call('DELETE', path);
      navigate('/providers');
    } catch (e) {
      setErr(e);
    }
  };

  if (!p) {
    return (
      <div>
        <p>
          <Link to="/providers">← Providers</Link>
        </p>
        {gone ? <p className="card">There is no provider {name} (anymore).</p> : err ? <ErrorBox err={err} /> : <p className="muted">Loading…</p>}
      </div>
    );
  }
  const c = p.status.inventory;
  const caps = Object.entries(p.status.capabilities ?? {});
  const all: [string, string, string?][] = [
    ['Type', p.spec.type],
    ['URL', p.spec.url ?? ''],
    ['User name', p.spec.username ?? ''],
    ['Certificate', p.spec.type !== 'vsphere' ? '' : p.spec.insecure ? 'not checked (insecure)' : p.spec.caCert ? 'checked against the given CA' : 'checked against the system CAs'],
    ['Project', p.project ?? ''],
    ['Last sync', p.status.lastSync ? `${ago(p.status.lastSync)} (${new Date(p.status.lastSync).toLocaleString()})` : 'not yet', 'provider-lastsync'],
    ['Inventory', c ? `${c.datacenters} datacenters, ${c.clusters} clusters, ${c.hosts} hosts, ${c.datastores ?? 0} datastores, ${c.networks ?? 0} networks, ${c.vms} VMs` : '', 'provider-counts'],
    ['Can', caps.filter(([, v]) => v).map(([k]) => k).join(', ') || 'nothing beyond reading', 'provider-caps'],
    ['Added', p.createdAt ? new Date(p.createdAt).toLocaleString() : ''],
  ];
  const rows = all.filter(([k, v]) => v || k !== 'Certificate');
  return (
    <div>
      <p className="crumbs">
        <Link to="/providers">Providers</Link>
      </p>
      <div className="row">
        <h1>{p.name}</h1>
        <span data-testid="provider-state">
          <State s={p.status.state} />
        </span>
        {p.status.stale && <span className="muted">inventory stale</span>}
        <div className="spacer" />
        {s.superadmin && (
          <div className="actions" role="group" aria-label="Provider actions">
            <button type="button" data-testid="provider-refresh" disabled={busy} onClick={() => void refresh()}>
              {busy ? 'Refreshing…' : 'Refresh'}
            </button>
            <button type="button" className="danger" data-testid="provider-remove" onClick={() => setAsk(true)}>
              Remove
            </button>
          </div>
        )}
      </div>
      {p.status.message && <p className={p.status.state === 'connected' ? 'muted' : 'error'}>{p.status.message}</p>}
      <ErrorBox err={err} testId="provider-action-error" />
      <section className="card">
        <dl className="summary">
          {rows.map(([k, v, id]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd data-testid={id}>{v || '—'}</dd>
            </div>
          ))}
        </dl>
        <p className="small">
          <Link to={`/vms?all=1&provider=${encodeURIComponent(p.name)}`}>Its VMs</Link> · <Link to="/hosts">Hosts</Link>
        </p>
      </section>
      <h2>Inventory</h2>
      {invErr ? <ErrorBox err={invErr} /> : !inv ? <p className="muted">Loading…</p> : null}
      {inv && (
        <div className="grid" data-testid="provider-inventory">
          <Items title="Datacenters" items={inv.datacenters} testId="inv-datacenters" />
          <Items title="Clusters" items={inv.clusters} testId="inv-clusters" />
          <Items title="Datastores" items={inv.datastores} testId="inv-datastores" />
          <Items title="Networks" items={inv.networks} testId="inv-networks" />
          <Items title="Templates" items={inv.templates} testId="inv-templates" />
        </div>
      )}
      {ask && (
        <Confirm
          title={`Remove provider ${p.name}?`}
          okLabel="Remove"
          danger
          body={<p>Polyvisor forgets {p.name}, its hosts and its VMs. Nothing on the hypervisor is touched.</p>}
          onOK={() => void remove()}
          onCancel={() => setAsk(false)}
        />
      )}
    </div>
  );
}
