import { useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { call, listAll, q, type Host, type Image, type Operation } from '../api';
import { useSession } from '../session';
import { navigate } from '../router';
import { ErrorBox } from '../ui';
import { formField } from '../lib/errors';

interface Form {
  name: string;
  image: string;
  vcpus: string;
  memory: string;
  network: string;
  userData: string;
  host: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  start: boolean;
}

const empty: Form = { name: '', image: '', vcpus: '1', memory: '512', network: 'user', userData: '', host: '', kernel: '', initrd: '', cmdline: '', start: true };

// imageRef names an image as a VM of project refers to it.
const imageRef = (img: Image, project: string) => (img.project === project ? img.name : `${img.project}/${img.name}`);

export function CreateVM() {
  const s = useSession();
  const [f, setF] = useState<Form>(empty);
  const [images, setImages] = useState<Image[]>([]);
  const [hosts, setHosts] = useState<Host[]>([]);
  const [field, setField] = useState<{ id: string; msg: string }>();
  const [err, setErr] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    listAll<Image>('/v1/images', { project: s.project }).then((l) => setImages(l.filter((i) => i.state === 'ready')), setErr);
    listAll<Host>('/v1/hosts').then((l) => setHosts(l.filter((h) => !h.provider)), () => {});
  }, [s.project]);

  const of = (kind: string) => images.filter((i) => i.kind === kind);
  const set = (k: keyof Form) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  const fieldErr = (id: string) =>
    field?.id === id ? (
      <span className="field-error" data-testid={`error-${id}`} role="alert">
        {field.msg}
      </span>
    ) : null;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setField(undefined);
    setErr(undefined);
    setBusy(true);
    const body = {
      name: f.name.trim(),
      vcpus: Number(f.vcpus),
      memoryMiB: Number(f.memory),
      disks: f.image ? [{ name: 'root', image: f.image }] : [],
      nics: [{ network: f.network }],
      boot: f.kernel ? { kernel: f.kernel, initrd: f.initrd || undefined, cmdline: f.cmdline || undefined } : undefined,
      cloudInit: f.userData ? { userData: f.userData } : undefined,
      host: f.host || undefined,
      powerState: f.start ? 'running' : 'stopped',
    };
    try {
      await call<Operation>('POST', '/v1/vms' + q({ project: s.project }), body);
      navigate(`/vms/${encodeURIComponent(s.project)}/${encodeURIComponent(body.name)}`);
    } catch (x) {
      const id = formField(x);
      if (id) setField({ id, msg: (x as Error).message });
      else setErr(x);
    } finally {
      setBusy(false);
    }
  }

  const row = (label: string, id: string, input: ReactNode) => (
    <label className="field">
      <span>{label}</span>
      {input}
      {fieldErr(id)}
    </label>
  );
  return (
    <form className="card wizard" onSubmit={submit} aria-labelledby="create-h">
      <h1 id="create-h">Create a VM in {s.project}</h1>
      <ErrorBox err={err} />
      <fieldset>
        <legend>Machine</legend>
        {row('Name', 'name', <input data-testid="wizard-name" value={f.name} onChange={set('name')} required aria-describedby="name-help" />)}
        <small id="name-help" className="muted">
          Lowercase letters, digits and '-'.
        </small>
        {row('vCPUs', 'vcpus', <input data-testid="wizard-vcpus" type="number" min={1} value={f.vcpus} onChange={set('vcpus')} />)}
        {row('Memory (MiB)', 'memoryMiB', <input data-testid="wizard-memory" type="number" min={64} value={f.memory} onChange={set('memory')} />)}
      </fieldset>
      <fieldset>
        <legend>Disk and network</legend>
        {row(
          'Image',
          'disks-0-image',
          <select data-testid="wizard-image" value={f.image} onChange={set('image')}>
            <option value="">(blank, no disk)</option>
            {of('disk').map((i) => (
              <option key={`${i.project}/${i.name}`} value={imageRef(i, s.project)}>
                {imageRef(i, s.project)}
              </option>
            ))}
          </select>,
        )}
        {row(
          'Network',
          'nics-0-network',
          <select data-testid="wizard-network" value={f.network} onChange={set('network')}>
            <option value="user">user (NAT)</option>
          </select>,
        )}
      </fieldset>
      <fieldset>
        <legend>Cloud-init</legend>
        {row('User data', 'cloudInit-userData', <textarea data-testid="wizard-user-data" rows={5} value={f.userData} onChange={set('userData')} placeholder="#cloud-config" />)}
      </fieldset>
      <fieldset>
        <legend>Placement</legend>
        {row(
          'Host',
          'host',
          <select data-testid="wizard-host" value={f.host} onChange={set('host')}>
            <option value="">automatic</option>
            {hosts.map((h) => (
              <option key={h.name} value={h.name}>
                {h.name} ({h.status.state})
              </option>
            ))}
          </select>,
        )}
      </fieldset>
      <fieldset>
        <legend>Direct kernel boot (optional)</legend>
        {row(
          'Kernel',
          'boot-kernel',
          <select data-testid="wizard-kernel" value={f.kernel} onChange={set('kernel')}>
            <option value="">(boot from the disk)</option>
            {of('kernel').map((i) => (
              <option key={i.name} value={imageRef(i, s.project)}>
                {imageRef(i, s.project)}
              </option>
            ))}
          </select>,
        )}
        {row(
          'Initrd',
          'boot-initrd',
          <select data-testid="wizard-initrd" value={f.initrd} onChange={set('initrd')}>
            <option value="">(none)</option>
            {of('initrd').map((i) => (
              <option key={i.name} value={imageRef(i, s.project)}>
                {imageRef(i, s.project)}
              </option>
            ))}
          </select>,
        )}
        {row('Kernel command line', 'boot-cmdline', <input data-testid="wizard-cmdline" value={f.cmdline} onChange={set('cmdline')} />)}
      </fieldset>
      <label className="inline">
        <input type="checkbox" checked={f.start} onChange={(e) => setF({ ...f, start: e.target.checked })} /> Power on after create
      </label>
      <div className="row end">
        <button type="button" onClick={() => navigate('/vms')}>
          Cancel
        </button>
        <button data-testid="wizard-submit" className="primary" disabled={busy}>
          Create
        </button>
      </div>
    </form>
  );
}
