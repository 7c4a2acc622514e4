import { useEffect, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { call, listAll, q, type Host, type Image, type Network, type Operation, type SecurityGroup } from '../api';
import type { Pool, Volume } from '../types';
import { useSession } from '../session';
import { Link, navigate } from '../router';
import { ErrorBox } from '../ui';
import { fieldError, type FieldError, type Slot } from '../lib/errors';
import { createBody, emptyWizard, imageRef, userNIC, type WizardForm, type WizardNIC } from '../lib/wizard';
import { vmPath } from '../lib/vmfilter';
import { free, hostUse } from '../lib/capacity';
import { mib } from '../lib/units';

export function CreateVM() {
  const s = useSession();
  const project = s.project;
  const [f, setF] = useState<WizardForm>(emptyWizard);
  const [images, setImages] = useState<Image[]>([]);
  const [hosts, setHosts] = useState<Host[]>([]);
  const [networks, setNetworks] = useState<Network[]>([]);
  const [groups, setGroups] = useState<SecurityGroup[]>([]);
  const [pools, setPools] = useState<Pool[]>([]);
  const [volumes, setVolumes] = useState<Volume[]>([]);
  const [field, setField] = useState<FieldError>();
  const [err, setErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const form = useRef<HTMLFormElement>(null);

  useEffect(() => {
    listAll<Image>('/v1/images', { project }).then((l) => setImages(l.filter((i) => i.state === 'ready')), setErr);
    // Networks and groups the NICs may name; a server without networks
    // offers "user" alone.
    listAll<Network>('/v1/networks', { project }).then((l) => setNetworks(l.filter((n) => n.project === project).sort((a, b) => a.name.localeCompare(b.name))), () => setNetworks([]));
    listAll<SecurityGroup>('/v1/security-groups', { project }).then((l) => setGroups(l.sort((a, b) => a.name.localeCompare(b.name))), () => setGroups([]));
    // Pools granted to the project, and its volumes a VM can boot from.
    listAll<Pool>('/v1/pools').then((l) => setPools(l.filter((p) => p.spec.projects?.includes(project)).sort((a, b) => a.name.localeCompare(b.name))), () => setPools([]));
    listAll<Volume>('/v1/volumes', { project }).then((l) => setVolumes(l.filter((v) => v.status.state === 'ready').sort((a, b) => a.name.localeCompare(b.name))), () => setVolumes([]));
    listAll<Host>('/v1/hosts').then((l) => setHosts(l.filter((h) => !h.provider).sort((a, b) => a.name.localeCompare(b.name))), () => {});
  }, [project]);

  // Move focus to the input whose error the API named.
  useEffect(() => {
    if (field) form.current?.querySelector<HTMLElement>(`[data-slot="${field.slot}"]`)?.focus();
  }, [field]);

  const of = (kind: string) => images.filter((i) => i.kind === kind).sort((a, b) => imageRef(a, project).localeCompare(imageRef(b, project)));
  const set = (k: keyof WizardForm) => (e: { target: { value: string } }) => setF((cur) => ({ ...cur, [k]: e.target.value }));
  const errFor = (slot: Slot) => (field?.slot === slot ? field : undefined);
  const setNIC = (i: number, change: Partial<WizardNIC>) => setF((cur) => ({ ...cur, nics: cur.nics.map((n, j) => (j === i ? { ...n, ...change } : n)) }));

  async function submit(e: FormEvent) {
    e.preventDefault();
    setField(undefined);
    setErr(undefined);
    setBusy(true);
    const body = createBody(f);
    try {
      const op = await call<Operation>('POST', '/v1/vms' + q({ project }), body);
      navigate(`${vmPath({ project, name: String(body.name) })}?op=${encodeURIComponent(op.id)}`);
    } catch (x) {
      const fe = fieldError(x);
      if (fe) setField(fe);
      else setErr(x);
    } finally {
      setBusy(false);
    }
  }

  // field lays out one labelled input with its help and inline error.
  const fieldRow = (slot: Slot, label: string, input: (a: { id: string; 'data-slot': string; 'aria-invalid'?: boolean; 'aria-describedby'?: string }) => ReactNode, help?: string) => {
    const fe = errFor(slot);
    const id = `w-${slot}`;
    const described = [help ? `${id}-help` : '', fe ? `${id}-err` : ''].filter(Boolean).join(' ') || undefined;
    return (
      <div className="field">
        <label htmlFor={id}>{label}</label>
        {input({ id, 'data-slot': slot, 'aria-invalid': fe ? true : undefined, 'aria-describedby': described })}
        {help && (
          <small id={`${id}-help`} className="muted help">
            {help}
          </small>
        )}
        {fe && (
          <span id={`${id}-err`} className="field-error" data-testid={fe.testId} role="alert">
            {fe.message}
          </span>
        )}
      </div>
    );
  };

  // nicRow picks NIC i's network, and on a network of the project its
  // address and security group.
  const nicRow = (i: number, a: object) => {
    const n = f.nics[i];
    const onNet = n.network !== 'user';
    return (
      <span className="row wrap">
        <select {...a} data-testid={i === 0 ? 'wizard-network' : `wizard-network-${i}`} value={n.network} onChange={(e) => setNIC(i, { network: e.target.value })}>
          <option value="user">user (NAT, outbound only)</option>
          {networks.map((x) => (
            <option key={x.name} value={x.name}>
              {x.name} ({x.spec.type})
            </option>
          ))}
        </select>
        {onNet && (
          <>
            <input aria-label={`NIC ${i} address`} data-testid={`wizard-nic-ip-${i}`} value={n.ip} onChange={(e) => setNIC(i, { ip: e.target.value })} placeholder="address (blank: the next free)" spellCheck={false} />
            <select aria-label={`NIC ${i} security group`} data-testid={`wizard-nic-group-${i}`} value={n.secgroup} onChange={(e) => setNIC(i, { secgroup: e.target.value })}>
              <option value="">(default group)</option>
              {groups.map((g) => (
                <option key={g.name} value={g.name}>
                  {g.name}
                </option>
              ))}
            </select>
          </>
        )}
      </span>
    );
  };

  if (!s.can('vm.create', project)) {
    return (
      <div className="card">
        <h1>Create a VM</h1>
        <p>
          Your role in {project} ({s.role(project) || 'none'}) does not create VMs: members and admins do. Pick another project above, or go back to the <Link to="/vms">VM list</Link>.
        </p>
      </div>
    );
  }
  const creatable = s.projects.filter((p) => s.can('vm.create', p));
  return (
    <form ref={form} className="card wizard" onSubmit={submit} aria-labelledby="create-h" noValidate>
      <h1 id="create-h">Create a VM</h1>
      <ErrorBox err={err} testId="wizard-error" />
      <fieldset>
        <legend>Machine</legend>
        <div className="field">
          <label htmlFor="w-project">Project</label>
          <select id="w-project" data-testid="wizard-project" value={project} onChange={(e) => s.setProject(e.target.value)}>
            {creatable.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </div>
        {fieldRow('name', 'Name', (a) => <input {...a} data-testid="wizard-name" value={f.name} onChange={set('name')} autoComplete="off" spellCheck={false} />, "Lowercase letters, digits and '-', up to 63.")}
        {fieldRow('vcpus', 'vCPUs', (a) => <input {...a} data-testid="wizard-vcpus" type="number" inputMode="numeric" min={1} value={f.vcpus} onChange={set('vcpus')} />)}
        {fieldRow('memoryMiB', 'Memory (MiB)', (a) => <input {...a} data-testid="wizard-memory" type="number" inputMode="numeric" min={16} step={64} value={f.memory} onChange={set('memory')} />)}
        {fieldRow('labels', 'Labels', (a) => <input {...a} data-testid="wizard-labels" value={f.labels} onChange={set('labels')} placeholder="app=web, tier=front" />)}
      </fieldset>
      <fieldset>
        <legend>Disk and network</legend>
        {fieldRow('image', 'Image', (a) => (
          <select {...a} data-testid="wizard-image" value={f.image} onChange={set('image')}>
            <option value="">(none)</option>
            {of('disk').map((i) => (
              <option key={`${i.project}/${i.name}`} value={imageRef(i, project)}>
                {imageRef(i, project)}
                {i.public ? ' (public)' : ''}
              </option>
            ))}
          </select>
        ), f.rootDisk === 'volume' ? 'Not used: the VM boots from the volume.' : f.rootDisk === 'pool' ? 'The root volume is a copy of this image.' : 'The root disk is a copy-on-write overlay of this image.')}
        {fieldRow('rootDisk', 'Root disk', (a) => (
          <span className="row wrap">
            <select {...a} data-testid="wizard-root-disk" value={f.rootDisk} onChange={(e) => setF((cur) => ({ ...cur, rootDisk: e.target.value as WizardForm['rootDisk'] }))}>
              <option value="">on the VM's host (an overlay of the image)</option>
              <option value="pool" disabled={!pools.length}>a new volume in a pool</option>
              <option value="volume" disabled={!volumes.length}>an existing volume</option>
            </select>
            {f.rootDisk === 'pool' && (
              <>
                <select aria-label="Root volume pool" data-testid="wizard-root-pool" value={f.rootPool} onChange={set('rootPool')}>
                  <option value="">(pick a pool)</option>
                  {pools.map((p) => (
                    <option key={p.name} value={p.name}>
                      {p.name} ({p.spec.kind})
                    </option>
                  ))}
                </select>
                <label className="row">
                  <input type="checkbox" data-testid="wizard-delete-root-volume" checked={f.deleteRootVolume} onChange={(e) => setF((cur) => ({ ...cur, deleteRootVolume: e.target.checked }))} />
                  delete it with the VM
                </label>
              </>
            )}
            {f.rootDisk === 'volume' && (
              <select aria-label="Root volume" data-testid="wizard-root-volume" value={f.rootVolume} onChange={set('rootVolume')}>
                <option value="">(pick a volume)</option>
                {volumes.map((v) => (
                  <option key={v.name} value={v.name}>
                    {v.name} ({v.spec.pool}, {mib(v.spec.sizeMiB)})
                  </option>
                ))}
              </select>
            )}
          </span>
        ), 'A volume outlives the VM: deleting the VM detaches it, and another VM can boot from it.')}
        {fieldRow('network', f.nics.length > 1 ? 'NIC 0: network' : 'Network', (a) => nicRow(0, a), 'A network of the project gives the NIC a port, an address of its subnets and security groups.')}
        {f.nics.slice(1).map((_, k) => (
          <div className="field" key={k + 1}>
            <label htmlFor={`w-nic-${k + 1}`}>NIC {k + 1}: network</label>
            {nicRow(k + 1, { id: `w-nic-${k + 1}` })}
          </div>
        ))}
        <div className="row">
          <button type="button" data-testid="wizard-nic-add" disabled={f.nics.length >= 8} onClick={() => setF((cur) => ({ ...cur, nics: [...cur.nics, { ...userNIC, network: networks[0]?.name ?? 'user' }] }))}>
            Add a NIC
          </button>
          {f.nics.length > 1 && (
            <button type="button" data-testid="wizard-nic-remove" onClick={() => setF((cur) => ({ ...cur, nics: cur.nics.slice(0, -1) }))}>
              Remove the last NIC
            </button>
          )}
        </div>
      </fieldset>
      <fieldset>
        <legend>Cloud-init</legend>
        {fieldRow('userData', 'User data', (a) => <textarea {...a} data-testid="wizard-user-data" rows={6} value={f.userData} onChange={set('userData')} placeholder="#cloud-config" spellCheck={false} />)}
      </fieldset>
      <fieldset>
        <legend>Placement</legend>
        {fieldRow('host', 'Host', (a) => (
          <select {...a} data-testid="wizard-host" value={f.host} onChange={set('host')}>
            <option value="">automatic</option>
            {hosts.map((h) => {
              const u = hostUse(h);
              return (
                <option key={h.name} value={h.name}>
                  {h.name} ({h.spec?.unschedulable ? 'cordoned' : h.status.state}, {free(u.vcpus)} vCPUs and {mib(free(u.memory))} free)
                </option>
              );
            })}
          </select>
        ))}
      </fieldset>
      <fieldset className="advanced">
        <legend>Advanced: firmware, direct kernel boot, lease</legend>
        {fieldRow('firmware', 'Firmware', (a) => (
          <select {...a} data-testid="wizard-firmware" value={f.firmware} onChange={set('firmware')}>
            <option value="bios">BIOS (SeaBIOS)</option>
            <option value="efi">EFI (OVMF)</option>
          </select>
        ), 'EFI boots an EFI system partition on the first disk; the VM keeps its own EFI variables (NVRAM).')}
        {fieldRow('kernel', 'Kernel image', (a) => (
          <select {...a} data-testid="wizard-kernel" value={f.kernel} onChange={set('kernel')}>
            <option value="">(boot the disk through firmware)</option>
            {of('kernel').map((i) => (
              <option key={`${i.project}/${i.name}`} value={imageRef(i, project)}>
                {imageRef(i, project)}
              </option>
            ))}
          </select>
        ))}
        {fieldRow('initrd', 'Initrd image', (a) => (
          <select {...a} data-testid="wizard-initrd" value={f.initrd} onChange={set('initrd')}>
            <option value="">(none)</option>
            {of('initrd').map((i) => (
              <option key={`${i.project}/${i.name}`} value={imageRef(i, project)}>
                {imageRef(i, project)}
              </option>
            ))}
          </select>
        ))}
        {fieldRow('cmdline', 'Kernel command line', (a) => <input {...a} data-testid="wizard-cmdline" value={f.cmdline} onChange={set('cmdline')} placeholder="console=ttyS0" spellCheck={false} />)}
        {fieldRow('lease', 'Lease (hours)', (a) => <input {...a} data-testid="wizard-lease" type="number" min={0} step="any" value={f.leaseHours} onChange={set('leaseHours')} />, "Blank: the project's default.")}
      </fieldset>
      {fieldRow('start', 'Power on after create', (a) => <input {...a} type="checkbox" data-testid="wizard-start" checked={f.start} onChange={(e) => setF((cur) => ({ ...cur, start: e.target.checked }))} />)}
      <div className="row end">
        <button type="button" onClick={() => navigate('/vms')}>
          Cancel
        </button>
        <button type="submit" data-testid="wizard-submit" className="primary" disabled={busy}>
          {busy ? 'Creating…' : 'Create'}
        </button>
      </div>
    </form>
  );
}
