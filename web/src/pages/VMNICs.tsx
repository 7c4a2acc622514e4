// The NICs of a VM: each with its network, port and address; NICs on
// networks of the project added and removed while the VM runs (what
// `polyvisor vm nic add|remove` do).
import { useEffect, useState, type FormEvent } from 'react';
import { call, listAll, q, type Network, type Operation, type SecurityGroup, type VM } from '../api';
import { ErrorBox } from '../ui';
import { Field, FormError, useForm } from '../form';
import { nicBody, nicField, type WizardNIC } from '../lib/wizard';

export function VMNICs({ vm, canChange }: { vm: VM; canChange: boolean }) {
  const project = vm.project ?? '';
  const [networks, setNetworks] = useState<Network[]>([]);
  const [groups, setGroups] = useState<SecurityGroup[]>([]);
  const [started, setStarted] = useState<Operation>();
  const [err, setErr] = useState<unknown>();
  // The API names a refused NIC's fields as the VM's ("nics[1].ip"): each
  // is shown beside this form's input of that name; what names no input
  // (the VM's NICs as a whole) above the form.
  const form = useForm(['network', 'ip', 'port', 'securityGroups']);
  const empty: WizardNIC = { network: '', ip: '', secgroup: '' };
  const [f, setF] = useState(empty);
  const provider = !!vm.spec.provider;
  useEffect(() => {
    if (!canChange || provider) return;
    listAll<Network>('/v1/networks', { project }).then((l) => setNetworks(l.filter((n) => n.project === project)), () => setNetworks([]));
    listAll<SecurityGroup>('/v1/security-groups', { project }).then(setGroups, () => setGroups([]));
  }, [project, canChange, provider]);
  const base = `/v1/vms/${encodeURIComponent(vm.name)}/nics`;
  async function add(e: FormEvent) {
    e.preventDefault();
    const body = nicBody({ ...f, network: f.network || networks[0]?.name || '' });
    const post = async () => {
      try {
        setStarted(await call<Operation>('POST', base + q({ project }), body));
      } catch (x) {
        throw nicField(x);
      }
    };
    if (await form.run(post)) setF(empty);
  }
  const remove = async (i: number) => {
    setErr(undefined);
    try {
      setStarted(await call<Operation>('DELETE', `${base}/${i}` + q({ project })));
    } catch (x) {
      setErr(x);
    }
  };
  const nics = vm.spec.nics ?? [];
  return (
    <section aria-labelledby="nics-h" data-testid="vm-nics">
      <h2 id="nics-h">NICs</h2>
      <ErrorBox err={err} testId="nic-remove-error" />
      <table className="table">
        <thead>
          <tr>
            <th>#</th>
            <th>Network</th>
            <th>Port</th>
            <th>Address</th>
            <th>MAC</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {nics.map((n, i) => (
            <tr key={`${i}-${n.port ?? n.mac}`} data-testid={`vm-nic-${i}`}>
              <td>{i}</td>
              <td>{n.network}</td>
              <td>{n.port || '—'}</td>
              <td>{n.ip || '—'}</td>
              <td className="mono">{n.mac || '—'}</td>
              <td>
                {canChange && !provider && (
                  <button type="button" data-testid={`vm-nic-remove-${i}`} onClick={() => remove(i)}>
                    Remove
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {started && (
        <p className="muted" role="status" data-testid="nic-op">
          {started.kind} started (operation {started.id})
        </p>
      )}
      {canChange && !provider && networks.length > 0 && (
        <form ref={form.box} onSubmit={add} noValidate className="row wrap" aria-label="Add a NIC">
          <FormError form={form} testId="nic-add-error" />
          <Field form={form} name="network" label="Network" idPrefix="nic">
            {(a) => (
              <select {...a} data-testid="nic-network" value={f.network || networks[0]?.name || ''} onChange={(e) => setF({ ...f, network: e.target.value })}>
                {networks.map((n) => (
                  <option key={n.name} value={n.name}>
                    {n.name}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <Field form={form} name="ip" label="Address" idPrefix="nic">
            {(a) => <input {...a} data-testid="nic-ip" value={f.ip} onChange={(e) => setF({ ...f, ip: e.target.value })} placeholder="blank: the next free" spellCheck={false} />}
          </Field>
          <Field form={form} name="securityGroups" label="Security group" idPrefix="nic">
            {(a) => (
              <select {...a} data-testid="nic-group" value={f.secgroup} onChange={(e) => setF({ ...f, secgroup: e.target.value })}>
                <option value="">(default group)</option>
                {groups.map((g) => (
                  <option key={g.name} value={g.name}>
                    {g.name}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <button type="submit" className="primary" data-testid="nic-add" disabled={form.busy}>
            Add NIC
          </button>
        </form>
      )}
    </section>
  );
}

