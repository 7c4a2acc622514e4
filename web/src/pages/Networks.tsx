// Networks of the selected project: networks with their subnets, ports
// (their addresses and VMs), security groups with their rules, and
// floating IPs: what `polyvisor network|subnet|port|secgroup|floating-ip`
// do.
import { useState, type FormEvent } from 'react';
import { call, listAll, q, type Event, type FloatingIP, type Network, type Port, type SecurityGroup, type SecurityGroupRule, type Subnet } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { Link, navigate, useLocation } from '../router';
import { Confirm, ErrorBox, Tabs } from '../ui';
import { Field, FormError, useForm } from '../form';
import { vmPath } from '../lib/vmfilter';
import { netKey, portIPs, ruleText, ruleBody, emptyRule, type RuleForm } from '../lib/networks';

type Kind = 'networks' | 'subnets' | 'ports' | 'security-groups' | 'floating-ips';

// live keeps one kind of the project's network objects current.
function useNetList<T extends { name: string; project?: string; version: number }>(path: string, project: string, pick: (e: Event) => T | undefined) {
  return useLiveList<T>((sig) => listAll<T>(path, { project }, sig), (e) => { const o = pick(e); return o && (o.project === project || e.action === 'deleted') ? o : undefined; }, netKey, [project], 30_000);
}

// Delete asks, then deletes one object; its error shows beside the lists.
function useDelete(project: string) {
  const [ask, setAsk] = useState<{ kind: Kind; name: string }>();
  const [err, setErr] = useState<unknown>();
  const dialog = ask && (
    <Confirm
      danger
      title={`Delete ${ask.kind.replace(/-/g, ' ').replace(/s$/, '')} ${ask.name}`}
      body={<p>This cannot be undone.</p>}
      okLabel="Delete"
      onCancel={() => setAsk(undefined)}
      onOK={async () => {
        const a = ask;
        setAsk(undefined);
        setErr(undefined);
        try {
          await call('DELETE', `/v1/${a.kind}/${encodeURIComponent(a.name)}` + q({ project }));
        } catch (x) {
          setErr(x);
        }
      }}
    />
  );
  return { ask: (kind: Kind, name: string) => setAsk({ kind, name }), err, dialog };
}

function NetworkForm({ project, superadmin }: { project: string; superadmin: boolean }) {
  const form = useForm(['name', 'type', 'bridge', 'external', 'nat', 'mtu', 'description']);
  const empty = { name: '', type: 'overlay', bridge: '', external: false, nat: false };
  const [f, setF] = useState(empty);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const body: Record<string, unknown> = { name: f.name.trim(), type: f.type };
    if (f.type === 'bridged') body.bridge = f.bridge.trim();
    if (f.external) body.external = true;
    if (f.nat) body.nat = true;
    if (await form.run(async () => void (await call('POST', '/v1/networks' + q({ project }), body)))) setF(empty);
  }
  return (
    <form ref={form.box} className="card" onSubmit={submit} aria-labelledby="net-new-h" noValidate>
      <h2 id="net-new-h">New network</h2>
      <FormError form={form} testId="network-error" />
      <Field form={form} name="name" label="Name" idPrefix="net">
        {(a) => <input {...a} data-testid="network-name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} autoComplete="off" spellCheck={false} />}
      </Field>
      <Field form={form} name="type" label="Type" idPrefix="net" help={superadmin ? 'overlay: VXLAN across the hosts; bridged: a bridge that exists on the hosts (a provider network).' : 'An overlay network spans the hosts of its VMs.'}>
        {(a) => (
          <select {...a} data-testid="network-type" value={f.type} onChange={(e) => setF({ ...f, type: e.target.value })}>
            <option value="overlay">overlay</option>
            {superadmin && <option value="bridged">bridged</option>}
          </select>
        )}
      </Field>
      {f.type === 'bridged' && (
        <Field form={form} name="bridge" label="Bridge on the hosts" idPrefix="net">
          {(a) => <input {...a} data-testid="network-bridge" value={f.bridge} onChange={(e) => setF({ ...f, bridge: e.target.value })} spellCheck={false} />}
        </Field>
      )}
      {superadmin && (
        <Field form={form} name="external" label="External" idPrefix="net" help="Floating IPs come from external networks.">
          {(a) => <input {...a} type="checkbox" data-testid="network-external" checked={f.external} onChange={(e) => setF({ ...f, external: e.target.checked })} />}
        </Field>
      )}
      <Field form={form} name="nat" label="Outbound NAT" idPrefix="net" help="Guests reach outside through the host's uplink.">
        {(a) => <input {...a} type="checkbox" data-testid="network-nat" checked={f.nat} onChange={(e) => setF({ ...f, nat: e.target.checked })} />}
      </Field>
      <div className="row end">
        <button type="submit" className="primary" data-testid="network-submit" disabled={form.busy}>
          Create network
        </button>
      </div>
    </form>
  );
}

function SubnetForm({ project, networks }: { project: string; networks: Network[] }) {
  const form = useForm(['name', 'network', 'cidr', 'gateway', 'dnsServers', 'dhcp']);
  const empty = { name: '', network: '', cidr: '', gateway: '', dns: '' };
  const [f, setF] = useState(empty);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const network = f.network || networks[0]?.name || '';
    const body: Record<string, unknown> = { name: f.name.trim() || `${network}-${f.cidr.includes(':') ? 'v6' : 'v4'}`, network, cidr: f.cidr.trim() };
    if (f.gateway.trim()) body.gateway = f.gateway.trim();
    const dns = f.dns.split(/[\s,]+/).filter(Boolean);
    if (dns.length) body.dnsServers = dns;
    if (await form.run(async () => void (await call('POST', '/v1/subnets' + q({ project }), body)))) setF(empty);
  }
  return (
    <form ref={form.box} className="card" onSubmit={submit} aria-labelledby="sub-new-h" noValidate>
      <h2 id="sub-new-h">New subnet</h2>
      <FormError form={form} testId="subnet-error" />
      <Field form={form} name="network" label="Network" idPrefix="sub">
        {(a) => (
          <select {...a} data-testid="subnet-network" value={f.network || networks[0]?.name || ''} onChange={(e) => setF({ ...f, network: e.target.value })}>
            {networks.map((n) => (
              <option key={n.name} value={n.name}>
                {n.name}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field form={form} name="cidr" label="CIDR" idPrefix="sub" help="IPv4 or IPv6, e.g. 10.0.0.0/24; networks of other projects may use the same.">
        {(a) => <input {...a} data-testid="subnet-cidr" value={f.cidr} onChange={(e) => setF({ ...f, cidr: e.target.value })} spellCheck={false} />}
      </Field>
      <Field form={form} name="gateway" label="Gateway" idPrefix="sub" help="Blank: the first address.">
        {(a) => <input {...a} data-testid="subnet-gateway" value={f.gateway} onChange={(e) => setF({ ...f, gateway: e.target.value })} spellCheck={false} />}
      </Field>
      <Field form={form} name="dnsServers" label="DNS servers" idPrefix="sub">
        {(a) => <input {...a} data-testid="subnet-dns" value={f.dns} onChange={(e) => setF({ ...f, dns: e.target.value })} spellCheck={false} placeholder="10.0.0.1, 1.1.1.1" />}
      </Field>
      <Field form={form} name="name" label="Name" idPrefix="sub" help="Blank: the network's name and the family.">
        {(a) => <input {...a} data-testid="subnet-name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} autoComplete="off" spellCheck={false} />}
      </Field>
      <div className="row end">
        <button type="submit" className="primary" data-testid="subnet-submit" disabled={form.busy || networks.length === 0}>
          Create subnet
        </button>
      </div>
    </form>
  );
}

function NetworksTab({ project, networks, subnets, may, del, superadmin }: { project: string; networks: Network[]; subnets: Subnet[]; may: (p: string) => boolean; del: ReturnType<typeof useDelete>; superadmin: boolean }) {
  return (
    <>
      <table className="table" data-testid="network-table">
        <thead>
          <tr>
            <th>Name</th>
            <th>Type</th>
            <th>Subnets</th>
            <th>Ports</th>
            <th>Hosts</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {networks.map((n) => (
            <tr key={netKey(n)} data-testid={`network-row-${n.name}`}>
              <td>{n.name}</td>
              <td>
                {n.spec.type}
                {n.status.vni ? ` (VNI ${n.status.vni})` : ''}
                {n.spec.external ? ', external' : ''}
                {n.spec.nat ? ', NAT' : ''}
                {n.provider ? `, of ${n.provider.name}` : ''}
              </td>
              <td>
                {subnets
                  .filter((s) => s.spec.network === n.name && s.project === n.project)
                  .map((s) => (
                    <div key={s.name} data-testid={`subnet-${s.name}`}>
                      {s.spec.cidr} <span className="muted">({s.name}, {s.status.used} used{s.spec.gateway ? `, gateway ${s.spec.gateway}` : ''})</span>{' '}
                      {may('network.delete') && n.project === project && (
                        <button type="button" className="link" data-testid={`subnet-delete-${s.name}`} onClick={() => del.ask('subnets', s.name)}>
                          delete
                        </button>
                      )}
                    </div>
                  ))}
              </td>
              <td>{n.status.ports}</td>
              <td>{(n.status.hosts ?? []).join(', ') || '—'}</td>
              <td>
                {may('network.delete') && n.project === project && !n.provider && (
                  <button type="button" data-testid={`network-delete-${n.name}`} onClick={() => del.ask('networks', n.name)}>
                    Delete
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {networks.length === 0 && <p className="muted">No networks in {project} yet.</p>}
      {may('network.create') && (
        <div className="grid2">
          <NetworkForm project={project} superadmin={superadmin} />
          <SubnetForm project={project} networks={networks.filter((n) => n.project === project && !n.provider)} />
        </div>
      )}
    </>
  );
}

function PortsTab({ project, ports, networks, groups, may, del }: { project: string; ports: Port[]; networks: Network[]; groups: SecurityGroup[]; may: (p: string) => boolean; del: ReturnType<typeof useDelete> }) {
  const form = useForm(['name', 'network', 'fixedIPs', 'securityGroups', 'mac']);
  const empty = { name: '', network: '', ip: '', group: '' };
  const [f, setF] = useState(empty);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const body: Record<string, unknown> = { name: f.name.trim(), network: f.network || networks[0]?.name || '' };
    if (f.ip.trim()) body.fixedIPs = [{ ip: f.ip.trim() }];
    if (f.group) body.securityGroups = [f.group];
    if (await form.run(async () => void (await call('POST', '/v1/ports' + q({ project }), body)))) setF(empty);
  }
  return (
    <>
      <table className="table" data-testid="port-table">
        <thead>
          <tr>
            <th>Name</th>
            <th>Network</th>
            <th>MAC</th>
            <th>Addresses</th>
            <th>VM</th>
            <th>Host</th>
            <th>State</th>
            <th>Security groups</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {ports.map((p) => (
            <tr key={netKey(p)} data-testid={`port-row-${p.name}`}>
              <td>{p.name}</td>
              <td>{p.spec.network}</td>
              <td className="mono">{p.spec.mac}</td>
              <td data-testid={`port-ips-${p.name}`}>{portIPs(p).join(', ')}</td>
              <td>{p.spec.vm ? <Link to={vmPath({ project: p.project ?? project, name: p.spec.vm.split('/').pop() ?? '' })}>{p.spec.vm.split('/').pop()}</Link> : '—'}</td>
              <td>{p.status.host || '—'}</td>
              <td>{p.status.state || '—'}</td>
              <td>{p.spec.portSecurity === false ? 'port security off' : (p.spec.securityGroups ?? []).join(', ')}</td>
              <td>
                {may('network.delete') && !p.spec.vm && (
                  <button type="button" data-testid={`port-delete-${p.name}`} onClick={() => del.ask('ports', p.name)}>
                    Delete
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {ports.length === 0 && <p className="muted">No ports: a VM's NIC on a network makes one.</p>}
      {may('network.create') && (
        <form ref={form.box} className="card" onSubmit={submit} aria-labelledby="port-new-h" noValidate>
          <h2 id="port-new-h">New port</h2>
          <FormError form={form} testId="port-error" />
          <Field form={form} name="network" label="Network" idPrefix="port">
            {(a) => (
              <select {...a} data-testid="port-network" value={f.network || networks[0]?.name || ''} onChange={(e) => setF({ ...f, network: e.target.value })}>
                {networks.map((n) => (
                  <option key={n.name} value={n.name}>
                    {n.name}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field form={form} name="name" label="Name" idPrefix="port">
            {(a) => <input {...a} data-testid="port-name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} autoComplete="off" spellCheck={false} />}
          </Field>
          <Field form={form} name="fixedIPs" label="Address" idPrefix="port" help="Blank: the next free address of the network's subnets.">
            {(a) => <input {...a} data-testid="port-ip" value={f.ip} onChange={(e) => setF({ ...f, ip: e.target.value })} spellCheck={false} />}
          </Field>
          <Field form={form} name="securityGroups" label="Security group" idPrefix="port" help="Blank: the project's default group.">
            {(a) => <GroupSelect attrs={a} testId="port-group" groups={groups} value={f.group} onChange={(group) => setF({ ...f, group })} />}
          </Field>
          <div className="row end">
            <button type="submit" className="primary" data-testid="port-submit" disabled={form.busy || networks.length === 0}>
              Create port
            </button>
          </div>
        </form>
      )}
    </>
  );
}

export function GroupSelect(props: { attrs: object; testId: string; groups: SecurityGroup[]; value: string; onChange(v: string): void; none?: string }) {
  return (
    <select {...props.attrs} data-testid={props.testId} value={props.value} onChange={(e) => props.onChange(e.target.value)}>
      <option value="">{props.none ?? '(default)'}</option>
      {props.groups.map((g) => (
        <option key={g.name} value={g.name}>
          {g.name}
        </option>
      ))}
    </select>
  );
}

function RuleEditor({ project, group, groups, may }: { project: string; group: SecurityGroup; groups: SecurityGroup[]; may: boolean }) {
  const form = useForm(['direction', 'protocol', 'portMin', 'portMax', 'remoteCIDR', 'remoteGroup', 'etherType', 'rules']);
  const [f, setF] = useState<RuleForm>(emptyRule);
  const [err, setErr] = useState<unknown>();
  const path = `/v1/security-groups/${encodeURIComponent(group.name)}`;
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (await form.run(async () => void (await call('POST', `${path}/rules` + q({ project }), { rules: [ruleBody(f)] })))) setF(emptyRule);
  }
  const remove = async (r: SecurityGroupRule) => {
    setErr(undefined);
    try {
      await call('DELETE', `${path}/rules/${encodeURIComponent(r.id ?? '')}` + q({ project }));
    } catch (x) {
      setErr(x);
    }
  };
  const set = (k: keyof RuleForm) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  return (
    <section className="card" aria-labelledby="rules-h" data-testid={`rules-${group.name}`}>
      <h2 id="rules-h">Rules of {group.name}</h2>
      {group.spec.description && <p className="muted">{group.spec.description}</p>}
      <ErrorBox err={err} testId="rule-remove-error" />
      <table className="table">
        <tbody>
          {(group.spec.rules ?? []).map((r) => (
            <tr key={r.id} data-testid={`rule-${r.id}`}>
              <td>{ruleText(r)}</td>
              <td>
                {may && (
                  <button type="button" data-testid={`rule-remove-${r.id}`} onClick={() => remove(r)}>
                    Remove
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {(group.spec.rules ?? []).length === 0 && <p className="muted">No rules: nothing comes in, nothing goes out.</p>}
      {may && (
        <form ref={form.box} onSubmit={submit} noValidate className="row wrap" aria-label="Add a rule">
          <FormError form={form} testId="rule-error" />
          <Field form={form} name="direction" label="Direction" idPrefix="rule">
            {(a) => (
              <select {...a} data-testid="rule-direction" value={f.direction} onChange={set('direction')}>
                <option value="ingress">ingress</option>
                <option value="egress">egress</option>
              </select>
            )}
          </Field>
          <Field form={form} name="protocol" label="Protocol" idPrefix="rule">
            {(a) => (
              <select {...a} data-testid="rule-protocol" value={f.protocol} onChange={set('protocol')}>
                {['any', 'tcp', 'udp', 'icmp'].map((p) => (
                  <option key={p} value={p}>
                    {p}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field form={form} name="portMin" label="Ports" idPrefix="rule" help="22, or 8000-8100; blank: all.">
            {(a) => <input {...a} data-testid="rule-ports" value={f.ports} onChange={set('ports')} spellCheck={false} />}
          </Field>
          <Field form={form} name="remoteCIDR" label="From/to CIDR" idPrefix="rule">
            {(a) => <input {...a} data-testid="rule-cidr" value={f.remoteCIDR} onChange={set('remoteCIDR')} spellCheck={false} placeholder="0.0.0.0/0" />}
          </Field>
          <Field form={form} name="remoteGroup" label="Or group" idPrefix="rule">
            {(a) => <GroupSelect attrs={a} testId="rule-group" groups={groups} value={f.remoteGroup} onChange={(remoteGroup) => setF({ ...f, remoteGroup })} none="(any)" />}
          </Field>
          <div className="row end">
            <button type="submit" className="primary" data-testid="rule-submit" disabled={form.busy}>
              Add rule
            </button>
          </div>
        </form>
      )}
    </section>
  );
}

function GroupsTab({ project, groups, selected, may, del }: { project: string; groups: SecurityGroup[]; selected: string; may: (p: string) => boolean; del: ReturnType<typeof useDelete> }) {
  const form = useForm(['name', 'description']);
  const [name, setName] = useState('');
  const sel = groups.find((g) => g.name === selected);
  const pick = (g: string) => navigate(`/networks?tab=security-groups&group=${encodeURIComponent(g)}`, true);
  async function submit(e: FormEvent) {
    e.preventDefault();
    const n = name.trim();
    if (await form.run(async () => void (await call('POST', '/v1/security-groups' + q({ project }), { name: n })))) {
      setName('');
      pick(n);
    }
  }
  return (
    <div className="grid2">
      <div>
        <ul className="plain" data-testid="group-list">
          {groups.map((g) => (
            <li key={g.name}>
              <button type="button" className="link" aria-current={g.name === selected ? 'true' : undefined} data-testid={`group-${g.name}`} onClick={() => pick(g.name)}>
                {g.name}
              </button>{' '}
              <span className="muted">({(g.spec.rules ?? []).length} rules)</span>{' '}
              {may('network.delete') && g.name !== 'default' && (
                <button type="button" className="link" data-testid={`group-delete-${g.name}`} onClick={() => del.ask('security-groups', g.name)}>
                  delete
                </button>
              )}
            </li>
          ))}
        </ul>
        {may('network.create') && (
          <form ref={form.box} onSubmit={submit} noValidate aria-label="New security group">
            <FormError form={form} testId="group-error" />
            <Field form={form} name="name" label="New group" idPrefix="grp" help="Made with the default rules: egress allowed, ingress from its own members.">
              {(a) => <input {...a} data-testid="group-name" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" spellCheck={false} />}
            </Field>
            <button type="submit" className="primary" data-testid="group-submit" disabled={form.busy}>
              Create group
            </button>
          </form>
        )}
      </div>
      {sel ? <RuleEditor key={sel.name} project={project} group={sel} groups={groups} may={may('network.update')} /> : <p className="muted">Pick a group to see and edit its rules.</p>}
    </div>
  );
}

function FloatingTab({ project, fips, networks, ports, may, del }: { project: string; fips: FloatingIP[]; networks: Network[]; ports: Port[]; may: (p: string) => boolean; del: ReturnType<typeof useDelete> }) {
  const form = useForm(['name', 'network', 'address', 'port']);
  const external = networks.filter((n) => n.spec.external);
  const empty = { name: '', network: '', port: '' };
  const [f, setF] = useState(empty);
  const [err, setErr] = useState<unknown>();
  async function submit(e: FormEvent) {
    e.preventDefault();
    const body: Record<string, unknown> = { name: f.name.trim(), network: f.network || external[0]?.name || '' };
    if (f.port) body.port = f.port;
    if (await form.run(async () => void (await call('POST', '/v1/floating-ips' + q({ project }), body)))) setF(empty);
  }
  const act = async (fip: FloatingIP, port: string) => {
    setErr(undefined);
    const path = `/v1/floating-ips/${encodeURIComponent(fip.name)}/${port ? 'associate' : 'disassociate'}` + q({ project });
    try {
      await call('POST', path, port ? { port } : {});
    } catch (x) {
      setErr(x);
    }
  };
  return (
    <>
      <ErrorBox err={err} testId="fip-action-error" />
      <table className="table" data-testid="fip-table">
        <thead>
          <tr>
            <th>Name</th>
            <th>Address</th>
            <th>Network</th>
            <th>Port</th>
            <th>Fixed IP</th>
            <th>Host</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {fips.map((x) => (
            <tr key={netKey(x)} data-testid={`fip-row-${x.name}`}>
              <td>{x.name}</td>
              <td className="mono">{x.spec.address}</td>
              <td>{x.spec.network}</td>
              <td>
                {may('network.update') ? (
                  <select aria-label={`Port of ${x.name}`} data-testid={`fip-port-${x.name}`} value={x.spec.port ?? ''} onChange={(e) => act(x, e.target.value)}>
                    <option value="">(none)</option>
                    {ports.map((p) => (
                      <option key={p.name} value={p.name}>
                        {p.name}
                      </option>
                    ))}
                  </select>
                ) : (
                  x.spec.port || '—'
                )}
              </td>
              <td>{x.status.fixedIP || '—'}</td>
              <td>{x.status.host || '—'}</td>
              <td>
                {may('network.delete') && (
                  <button type="button" data-testid={`fip-delete-${x.name}`} onClick={() => del.ask('floating-ips', x.name)}>
                    Delete
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {fips.length === 0 && <p className="muted">No floating IPs.</p>}
      {may('network.create') && (
        <form ref={form.box} className="card" onSubmit={submit} aria-labelledby="fip-new-h" noValidate>
          <h2 id="fip-new-h">New floating IP</h2>
          <FormError form={form} testId="fip-error" />
          <Field form={form} name="network" label="External network" idPrefix="fip">
            {(a) => (
              <select {...a} data-testid="fip-network" value={f.network || external[0]?.name || ''} onChange={(e) => setF({ ...f, network: e.target.value })}>
                {external.map((n) => (
                  <option key={netKey(n)} value={n.project === project ? n.name : `${n.project}/${n.name}`}>
                    {n.project === project ? n.name : `${n.project}/${n.name}`}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field form={form} name="name" label="Name" idPrefix="fip">
            {(a) => <input {...a} data-testid="fip-name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} autoComplete="off" spellCheck={false} />}
          </Field>
          <Field form={form} name="port" label="Map to port" idPrefix="fip">
            {(a) => (
              <select {...a} data-testid="fip-new-port" value={f.port} onChange={(e) => setF({ ...f, port: e.target.value })}>
                <option value="">(none yet)</option>
                {ports.map((p) => (
                  <option key={p.name} value={p.name}>
                    {p.name} ({portIPs(p).join(', ')})
                  </option>
                ))}
              </select>
            )}
          </Field>
          <div className="row end">
            <button type="submit" className="primary" data-testid="fip-submit" disabled={form.busy || external.length === 0}>
              Allocate
            </button>
          </div>
        </form>
      )}
    </>
  );
}

export function Networks() {
  const s = useSession();
  const project = s.project;
  const { search } = useLocation();
  const params = new URLSearchParams(search);
  const tab = (params.get('tab') as Kind | null) ?? 'networks';
  const networks = useNetList<Network>('/v1/networks', project, (e) => e.network);
  const subnets = useNetList<Subnet>('/v1/subnets', project, (e) => e.subnet);
  const ports = useNetList<Port>('/v1/ports', project, (e) => e.port);
  const groups = useNetList<SecurityGroup>('/v1/security-groups', project, (e) => e.securityGroup);
  const fips = useNetList<FloatingIP>('/v1/floating-ips', project, (e) => e.floatingIP);
  const del = useDelete(project);
  const may = (p: string) => s.can(p, project);
  const byName = <T extends { name: string }>(l: T[]) => [...l].sort((a, b) => a.name.localeCompare(b.name));
  const own = byName(networks.items.filter((n) => n.project === project));
  return (
    <div>
      <h1>Networks of {project}</h1>
      <Tabs
        label="Network objects"
        current={tab}
        onSelect={(id) => navigate(`/networks?tab=${id}`, true)}
        tabs={[
          ['networks', 'Networks and subnets'],
          ['ports', 'Ports'],
          ['security-groups', 'Security groups'],
          ['floating-ips', 'Floating IPs'],
        ]}
      />
      <ErrorBox err={networks.error || subnets.error || ports.error || groups.error || fips.error || del.err} testId="networks-error" />
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
        {tab === 'networks' && <NetworksTab project={project} networks={byName(networks.items)} subnets={byName(subnets.items)} may={may} del={del} superadmin={s.superadmin} />}
        {tab === 'ports' && <PortsTab project={project} ports={byName(ports.items)} networks={own} groups={byName(groups.items)} may={may} del={del} />}
        {tab === 'security-groups' && <GroupsTab project={project} groups={byName(groups.items)} selected={params.get('group') ?? ''} may={may} del={del} />}
        {tab === 'floating-ips' && <FloatingTab project={project} fips={byName(fips.items)} networks={byName(networks.items)} ports={byName(ports.items)} may={may} del={del} />}
      </div>
      {del.dialog}
    </div>
  );
}
