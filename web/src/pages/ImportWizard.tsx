// The import wizard: VMs of a connected provider, an uploaded OVA or disk
// files, or an OVA URL, moved onto a Polyvisor host. The choices make a
// migration that the server plans (nothing is copied yet); the plan says
// per VM what will be done and what cannot move, and Run starts it.
import { useEffect, useMemo, useRef, useState, type FormEvent } from 'react';
import { call, listAll, q, upload, type Host, type Network, type VM, type VMMigration } from '../api';
import { useSession } from '../session';
import { Link, navigate } from '../router';
import { ErrorBox, State } from '../ui';
import { Field, FormError, useForm } from '../form';
import { free, hostUse } from '../lib/capacity';
import { fieldId } from '../lib/errors';
import { mib, bytes } from '../lib/units';
import { inventory, providerOf } from '../lib/vmfilter';
import { nameFromFile } from '../lib/images';
import { blocked, checkChoices, createBody, defaultNetworkMap, emptyChoices, eta, maxParallel, migrationName, migrationPath, sourceNetworks, summarizePlan, summaryText, type ImportChoices, type SourceKind } from '../lib/v2v';

// The inputs, each named for the API field whose error it shows.
const fields = ['name', 'source.provider', 'source.vms', 'source.format', 'source.files', 'source.hardware.name', 'source.hardware.vcpus', 'source.hardware.memoryMiB', 'source.hardware.firmware', 'source.hardware.macs', 'source.url', 'host', 'networkMap', 'parallel', 'sourceDisposition'];
const seg = encodeURIComponent;
const planned = (m: VMMigration) => m.status.state !== 'uploading' && m.status.state !== 'planning';

// ProviderVMs picks VMs of one provider from its inventory tree.
function ProviderVMs(props: { vms: VM[]; chosen: string[]; onChange(ids: string[]): void; attrs: object }) {
  const tree = useMemo(() => inventory(props.vms), [props.vms]);
  const set = new Set(props.chosen);
  const toggle = (ids: string[], on: boolean) => props.onChange(on ? [...new Set([...props.chosen, ...ids])] : props.chosen.filter((x) => !ids.includes(x)));
  if (props.vms.length === 0) return <p className="muted">This provider shows no VMs in this project.</p>;
  return (
    <div className="pick" {...props.attrs} tabIndex={-1} data-testid="import-vm-tree">
      {[...tree.values()].map((places) =>
        [...places.entries()].map(([place, hosts]) => (
          <ul key={place}>
            {place && <li className="muted place">{place}</li>}
            {[...hosts.entries()].map(([h, vms]) => {
              const ids = vms.map((v) => v.spec.provider?.id ?? '').filter(Boolean);
              return (
                <li key={h}>
                  <label className="inline">
                    <input type="checkbox" checked={ids.length > 0 && ids.every((i) => set.has(i))} onChange={(e) => toggle(ids, e.target.checked)} /> {h} <span className="muted">({vms.length})</span>
                  </label>
                  <ul>
                    {vms.map((v) => {
                      const id = v.spec.provider?.id ?? '';
                      return (
                        <li key={v.name}>
                          <label className="inline">
                            <input type="checkbox" data-testid={`import-vm-${v.name}`} disabled={!id} checked={set.has(id)} onChange={(e) => toggle([id], e.target.checked)} /> {v.name}{' '}
                            <span className="muted small">
                              {v.status.powerState} · {v.spec.vcpus} vCPU · {mib(v.spec.memoryMiB)}
                              {(v.spec.nics ?? []).length ? ` · ${(v.spec.nics ?? []).map((n) => n.network).join(', ')}` : ''}
                            </span>
                          </label>
                        </li>
                      );
                    })}
                  </ul>
                </li>
              );
            })}
          </ul>
        )),
      )}
    </div>
  );
}

// PlanReview shows the plan of each VM: mapping, sizes, time, and what
// cannot move and why.
function PlanReview({ m }: { m: VMMigration }) {
  const vms = m.status.vms ?? [];
  const sum = summarizePlan(vms, m.spec.parallel);
  return (
    <>
      <p data-testid="plan-summary">{summaryText(sum)}</p>
      {sum.networks.length > 0 && (
        <p className="muted small">
          Networks: {sum.networks.map(([s, d]) => `${s || '(none)'} → ${d}`).join(', ')}
        </p>
      )}
      <div className="tablewrap">
        <table data-testid="plan-table">
          <thead>
            <tr>
              <th scope="col">VM</th>
              <th scope="col">Hardware</th>
              <th scope="col">Disks</th>
              <th scope="col">NICs</th>
              <th scope="col">To copy</th>
              <th scope="col">Time</th>
              <th scope="col">What the plan says</th>
            </tr>
          </thead>
          <tbody>
            {vms.map((v) => {
              const p = v.plan;
              return (
                <tr key={v.name} data-testid={`plan-row-${v.name}`} className={blocked(v) ? 'disabled' : undefined}>
                  <td>
                    {v.name}
                    {v.sourceName && v.sourceName !== v.name && <div className="muted small">from {v.sourceName}</div>}
                    <div>
                      <State s={blocked(v) ? 'blocked' : 'ready'} />
                    </div>
                  </td>
                  <td className="wrap">
                    {p ? `${p.vcpus} vCPU, ${mib(p.memoryMiB)}` : ''}
                    {p?.firmware && <div className="muted small">firmware {p.firmware}</div>}
                    {p?.guestOS && <div className="muted small">{p.guestOS}</div>}
                    {p?.running && <div className="small alert-warn">running</div>}
                  </td>
                  <td className="wrap">
                    {(p?.disks ?? []).map((d) => (
                      <div key={d.name}>
                        {d.name}: {d.sourceBus && d.sourceBus !== d.bus ? `${d.sourceBus} → ` : ''}
                        {d.bus} {bytes(d.capacityBytes)}
                      </div>
                    ))}
                  </td>
                  <td className="wrap">
                    {(p?.nics ?? []).map((n, i) => (
                      <div key={i}>
                        {n.sourceNetwork || '(none)'} → {n.network} <span className="muted small mono">{n.mac}</span>
                      </div>
                    ))}
                  </td>
                  <td className="num">{bytes(p?.copyBytes)}</td>
                  <td>{eta(p?.estimatedSeconds)}</td>
                  <td className="wrap">
                    {(p?.blockers ?? []).map((b, i) => (
                      <div key={`b${i}`} className="alert-error" data-testid="plan-blocker">
                        cannot move: {b}
                      </div>
                    ))}
                    {(p?.warnings ?? []).map((w, i) => (
                      <div key={`w${i}`} className="alert-warn">
                        {w}
                      </div>
                    ))}
                    {(p?.conversions ?? []).map((c, i) => (
                      <div key={`c${i}`} className="muted small">
                        {c}
                      </div>
                    ))}
                    {p?.adaptation && p.adaptation !== 'none' && <div className="muted small">adapted with {p.adaptation}</div>}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </>
  );
}

export function ImportWizard() {
  const s = useSession();
  const project = s.project;
  const form = useForm(fields);
  const [c, setC] = useState<ImportChoices>(() => ({ ...emptyChoices, name: migrationName(new Date()) }));
  const [files, setFiles] = useState<File[]>([]);
  const [vms, setVMs] = useState<VM[]>([]);
  const [hosts, setHosts] = useState<Host[]>([]);
  const [networks, setNetworks] = useState<string[]>([]);
  const [loadErr, setLoadErr] = useState<unknown>();
  const [step, setStep] = useState('');
  const [mig, setMig] = useState<VMMigration>();
  const [stale, setStale] = useState(false);
  const [runErr, setRunErr] = useState<unknown>();
  const ctl = useRef<AbortController | null>(null);

  useEffect(() => {
    listAll<VM>('/v1/vms', { project }).then((l) => setVMs(l.filter((v) => v.spec.provider)), setLoadErr);
    listAll<Host>('/v1/hosts').then((l) => setHosts(l.filter((h) => !h.provider).sort((a, b) => a.name.localeCompare(b.name))), () => setHosts([]));
    listAll<Network>('/v1/networks', { project }).then((l) => setNetworks(l.filter((n) => n.project === project).map((n) => n.name).sort()), () => setNetworks([]));
    return () => ctl.current?.abort();
  }, [project]);

  const providers = useMemo(() => [...new Set(vms.map(providerOf))].sort(), [vms]);
  const provVMs = useMemo(() => vms.filter((v) => providerOf(v) === c.provider), [vms, c.provider]);
  const chosenVMs = useMemo(() => provVMs.filter((v) => c.vms.includes(v.spec.provider?.id ?? '')), [provVMs, c.vms]);
  // The source networks: those of the chosen VMs' NICs, and those a plan
  // found (an OVA's), each mapped on its own.
  const srcNets = useMemo(() => {
    const fromPlan = mig ? summarizePlan(mig.status.vms ?? [], 1).networks.map(([n]) => n) : [];
    return [...new Set([...(c.kind === 'provider' ? sourceNetworks(chosenVMs) : []), ...fromPlan])].filter(Boolean).sort((a, b) => a.localeCompare(b));
  }, [c.kind, chosenVMs, mig]);
  // Each source network of the chosen VMs gets a mapping as they are chosen.
  useEffect(() => setC((cur) => ({ ...cur, networkMap: defaultNetworkMap(srcNets, networks, cur.networkMap) })), [srcNets, networks]);

  const change = (patch: Partial<ImportChoices>) => {
    setC((cur) => ({ ...cur, ...patch }));
    if (mig) setStale(true);
  };
  const set = (k: keyof ImportChoices) => (e: { target: { value: string } }) => change({ [k]: e.target.value } as Partial<ImportChoices>);

  // wait reads the migration until the server planned it.
  async function wait(m: VMMigration, signal: AbortSignal): Promise<VMMigration> {
    let cur = m;
    while (!planned(cur)) {
      await new Promise((r) => setTimeout(r, 1000));
      if (signal.aborted) throw new DOMException('planning was left to the server: the migration is on the migrations page', 'AbortError');
      cur = await call<VMMigration>('GET', `/v1/migrations/${seg(m.name)}${q({ project })}`, undefined, signal);
    }
    return cur;
  }

  async function plan(e: FormEvent) {
    e.preventDefault();
    setRunErr(undefined);
    const problems = checkChoices(c);
    if (problems.length) {
      form.place(problems[0].field, `error-${fieldId(problems[0].field)}`, problems[0].message);
      return;
    }
    ctl.current?.abort();
    const signal = (ctl.current = new AbortController()).signal;
    await form.run(async () => {
      // A plan made before is replaced: its record goes first (the name
      // stays the user's choice).
      if (mig) {
        setStep('Discarding the previous plan…');
        await call<void>('DELETE', `/v1/migrations/${seg(mig.name)}${q({ project })}`).catch(() => {});
        setMig(undefined);
      }
      setStep('Recording the migration…');
      let m = await call<VMMigration>('POST', '/v1/migrations' + q({ project }), createBody(c), signal);
      try {
        for (const f of c.kind === 'upload' ? files : []) {
          m = await upload<VMMigration>(`/v1/migrations/${seg(m.name)}/files/${seg(f.name)}${q({ project })}`, f, (a, b) => setStep(`Uploading ${f.name}: ${bytes(a)} of ${bytes(b)}…`), signal, 'PUT');
        }
      } catch (x) {
        // Nothing half-made stays: a migration whose upload failed or
        // was stopped goes.
        await call<void>('DELETE', `/v1/migrations/${seg(m.name)}${q({ project })}`).catch(() => {});
        throw x;
      }
      // Once recorded whole, the server plans it whether or not the
      // wizard waits: it is on the migrations page.
      setStep('The server reads the source and plans…');
      m = await wait(m, signal);
      setMig(m);
      setStale(false);
    });
    setStep('');
  }

  async function run() {
    if (!mig) return;
    setRunErr(undefined);
    try {
      await call<VMMigration>('POST', `/v1/migrations/${seg(mig.name)}/start${q({ project })}`);
      navigate(migrationPath(mig));
    } catch (x) {
      setRunErr(x);
    }
  }

  if (!s.can('vm.create', project)) {
    return (
      <div className="card">
        <h1>Import VMs</h1>
        <p>
          Your role in {project} ({s.role(project) || 'none'}) does not create VMs: members and admins do. Pick another project above, or go back to the <Link to="/migrations">migrations</Link>.
        </p>
      </div>
    );
  }
  const kinds: [SourceKind, string][] = [
    ['provider', "A connected provider's VMs"],
    ['upload', 'An OVA or disk files from this computer'],
    ['url', 'An OVA at a URL'],
  ];
  const dispositions = [
    ['keep', 'keep them as they are', true],
    ['poweroff', 'power them off once their copy runs', s.can('vm.power', project)],
    ['delete', 'delete them once their copy runs', s.can('vm.delete', project)],
  ] as const;
  const sum = mig && summarizePlan(mig.status.vms ?? [], mig.spec.parallel);
  const netChoice = (value: string, onChange: (v: string) => void, attrs: object, testId: string) => (
    <select {...attrs} data-testid={testId} value={value} onChange={(e) => onChange(e.target.value)}>
      <option value="user">user (NAT, outbound only)</option>
      {networks.map((n) => (
        <option key={n} value={n}>
          {n}
        </option>
      ))}
    </select>
  );
  return (
    <div>
      <p className="crumbs">
        <Link to="/migrations">Migrations</Link>
      </p>
      <form ref={form.box} className="card wizard" onSubmit={plan} aria-labelledby="import-h" noValidate>
        <h1 id="import-h">Import VMs</h1>
        <p className="muted small">into {project}. The server reads the source and plans; nothing is copied until you run the plan.</p>
        <ErrorBox err={loadErr} />
        <FormError form={form} testId="import-error" />
        <fieldset>
          <legend>Source</legend>
          <div className="field" role="radiogroup" aria-label="Source">
            <span>Where from</span>
            <span className="row">
              {kinds.map(([k, label]) => (
                <label key={k} className="inline">
                  <input type="radio" name="kind" data-testid={`import-kind-${k}`} checked={c.kind === k} onChange={() => change({ kind: k, disposition: k === 'provider' ? c.disposition : 'keep' })} /> {label}
                </label>
              ))}
            </span>
          </div>
          {c.kind === 'provider' && (
            <>
              <Field form={form} name="source.provider" label="Provider" idPrefix="imp" help={providers.length ? 'A provider bound to this project.' : 'No provider shows VMs in this project.'}>
                {(a) => (
                  <select {...a} data-testid="import-provider" value={c.provider} onChange={(e) => change({ provider: e.target.value, vms: [] })}>
                    <option value="">(choose)</option>
                    {providers.map((p) => (
                      <option key={p} value={p}>
                        {p}
                      </option>
                    ))}
                  </select>
                )}
              </Field>
              {c.provider && (
                <Field form={form} name="source.vms" label={`VMs (${c.vms.length} chosen)`} idPrefix="imp">
                  {(a) => <ProviderVMs attrs={a} vms={provVMs} chosen={c.vms} onChange={(ids) => change({ vms: ids })} />}
                </Field>
              )}
            </>
          )}
          {c.kind === 'upload' && (
            <>
              <Field form={form} name="source.format" label="Format" idPrefix="imp">
                {(a) => (
                  <select {...a} data-testid="import-format" value={c.format} onChange={(e) => change({ format: e.target.value === 'disk' ? 'disk' : 'ova' })}>
                    <option value="ova">an OVA (its envelope says the hardware)</option>
                    <option value="disk">one VM's disk files: VMDK, VHD, VHDX, VDI, raw, qcow2</option>
                  </select>
                )}
              </Field>
              <Field form={form} name="source.files" label={c.format === 'ova' ? 'OVA file' : 'Disk files'} idPrefix="imp" help={c.format === 'disk' ? 'The first is the boot disk.' : undefined}>
                {(a) => (
                  <input
                    {...a}
                    type="file"
                    data-testid="import-files"
                    multiple={c.format === 'disk'}
                    accept={c.format === 'ova' ? '.ova' : undefined}
                    onChange={(e) => {
                      const l = [...(e.target.files ?? [])];
                      setFiles(l);
                      change({ files: l.map((f) => ({ name: f.name, size: f.size })), hwName: c.hwName || (l[0] ? nameFromFile(l[0].name) : '') });
                    }}
                  />
                )}
              </Field>
              {c.format === 'disk' && (
                <>
                  <Field form={form} name="source.hardware.name" label="VM name" idPrefix="imp">
                    {(a) => <input {...a} data-testid="import-hw-name" value={c.hwName} onChange={set('hwName')} autoComplete="off" spellCheck={false} />}
                  </Field>
                  <Field form={form} name="source.hardware.vcpus" label="vCPUs" idPrefix="imp">
                    {(a) => <input {...a} data-testid="import-hw-vcpus" type="number" min={1} value={c.vcpus} onChange={set('vcpus')} />}
                  </Field>
                  <Field form={form} name="source.hardware.memoryMiB" label="Memory (MiB)" idPrefix="imp">
                    {(a) => <input {...a} data-testid="import-hw-memory" type="number" min={1} step={64} value={c.memory} onChange={set('memory')} />}
                  </Field>
                  <Field form={form} name="source.hardware.firmware" label="Firmware" idPrefix="imp">
                    {(a) => (
                      <select {...a} value={c.firmware} onChange={set('firmware')}>
                        <option value="bios">BIOS</option>
                        <option value="efi">EFI</option>
                      </select>
                    )}
                  </Field>
                  <Field form={form} name="source.hardware.macs" label="NICs by MAC" idPrefix="imp" help="Comma-separated: each a NIC of the new VM, its MAC kept, on the network chosen below.">
                    {(a) => <input {...a} data-testid="import-hw-macs" value={c.macs} onChange={set('macs')} placeholder="00:15:5d:01:02:03" spellCheck={false} />}
                  </Field>
                </>
              )}
            </>
          )}
          {c.kind === 'url' && (
            <Field form={form} name="source.url" label="OVA URL" idPrefix="imp" help="http or https; the server fetches it under the image import's rules.">
              {(a) => <input {...a} data-testid="import-url" value={c.url} onChange={set('url')} placeholder="https://…/appliance.ova" spellCheck={false} />}
            </Field>
          )}
        </fieldset>
        <fieldset>
          <legend>Destination</legend>
          <Field form={form} name="host" label="Host" idPrefix="imp">
            {(a) => (
              <select {...a} data-testid="import-host" value={c.host} onChange={set('host')}>
                <option value="">automatic: the scheduler places each VM</option>
                {hosts.map((h) => {
                  const u = hostUse(h);
                  return (
                    <option key={h.name} value={h.name}>
                      {h.name} ({h.spec?.unschedulable ? 'cordoned' : h.status.state}, {free(u.vcpus)} vCPUs and {mib(free(u.memory))} free)
                    </option>
                  );
                })}
              </select>
            )}
          </Field>
          {srcNets.map((n, i) => (
            <div className="field" key={n}>
              <label htmlFor={`imp-net-${i}`}>Network {n}</label>
              {netChoice(c.networkMap[n] ?? 'user', (v) => change({ networkMap: { ...c.networkMap, [n]: v } }), { id: `imp-net-${i}` }, `import-net-${n}`)}
            </div>
          ))}
          <Field form={form} name="networkMap" label={srcNets.length ? 'Any other network' : 'Source networks'} idPrefix="imp" help={srcNets.length ? undefined : "Every NIC of the source goes on this network; the plan lists the source's networks."}>
            {(a) => netChoice(c.networkMap['*'] ?? 'user', (v) => change({ networkMap: { ...c.networkMap, '*': v } }), a, 'import-net-default')}
          </Field>
        </fieldset>
        <fieldset>
          <legend>Run</legend>
          <Field form={form} name="name" label="Migration name" idPrefix="imp">
            {(a) => <input {...a} data-testid="import-name" value={c.name} onChange={set('name')} autoComplete="off" spellCheck={false} />}
          </Field>
          <Field form={form} name="parallel" label="VMs at once" idPrefix="imp" help={`The wave size: 1 to ${maxParallel}.`}>
            {(a) => <input {...a} data-testid="import-parallel" type="number" min={1} max={maxParallel} value={c.parallel} onChange={set('parallel')} />}
          </Field>
          {c.kind === 'provider' && (
            <Field form={form} name="sourceDisposition" label="Source VMs afterwards" idPrefix="imp" help="Each source VM stays until its copy runs here.">
              {(a) => (
                <select {...a} data-testid="import-disposition" value={c.disposition} onChange={set('disposition')}>
                  {dispositions
                    .filter(([, , may]) => may)
                    .map(([v, label]) => (
                      <option key={v} value={v}>
                        {label}
                      </option>
                    ))}
                </select>
              )}
            </Field>
          )}
        </fieldset>
        <div className="row end">
          {step && (
            <span role="status" className="muted" data-testid="import-step">
              {step}
            </span>
          )}
          {form.busy && (
            <button type="button" onClick={() => ctl.current?.abort()}>
              Stop
            </button>
          )}
          <button type="submit" className={mig && !stale ? undefined : 'primary'} data-testid="import-plan" disabled={form.busy}>
            {form.busy ? 'Planning…' : mig ? 'Plan again' : 'Plan'}
          </button>
        </div>
      </form>
      {mig && (
        <section className="card" aria-labelledby="plan-h" data-testid="import-review">
          <div className="row">
            <h2 id="plan-h">Plan of {mig.name}</h2>
            <State s={mig.status.state} />
          </div>
          {mig.status.error && <div className="error">{mig.status.error}</div>}
          {stale && (
            <p className="hint" data-testid="import-stale">
              The choices changed since this plan: plan again to run them.
            </p>
          )}
          <PlanReview m={mig} />
          <ErrorBox err={runErr} testId="import-run-error" />
          <div className="row end">
            <Link to={migrationPath(mig)}>Keep it planned</Link>
            <button type="button" className="primary" data-testid="import-run" disabled={stale || !sum || sum.runnable === 0 || mig.status.state !== 'planned'} onClick={() => void run()}>
              Run {sum && sum.blocked > 0 ? `the ${sum.runnable} that can move` : ''}
            </button>
          </div>
        </section>
      )}
    </div>
  );
}
