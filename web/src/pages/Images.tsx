import { useMemo, useRef, useState, type FormEvent } from 'react';
import { adminRoutes, call, listAll, q, setImagePublic, uploadImage, type Image, type Operation } from '../api';
import { useLiveList } from '../live';
import { useSession } from '../session';
import { navigate, useLocation } from '../router';
import { Confirm, ErrorBox, State, ago } from '../ui';
import { Field, FormError, useForm } from '../form';
import { OpStatus, useOperation } from '../operation';
import { imageKey, kindFromFile, nameFromFile, owner, visibleImages } from '../lib/images';
import { bytes } from '../lib/units';

const kinds = ['disk', 'kernel', 'initrd'];

function KindSelect(props: { value: string; onChange(v: string): void; attrs: object; testId: string }) {
  return (
    <select {...props.attrs} data-testid={props.testId} value={props.value} onChange={(e) => props.onChange(e.target.value)}>
      {kinds.map((k) => (
        <option key={k} value={k}>
          {k}
        </option>
      ))}
    </select>
  );
}

// Upload sends a file from this computer; the server inspects it before
// it answers, then converts it as an operation.
function Upload({ project, superadmin, onStarted }: { project: string; superadmin: boolean; onStarted(op: Operation): void }) {
  const form = useForm(['name', 'kind', 'image', 'public']);
  const [file, setFile] = useState<File>();
  const [name, setName] = useState('');
  const [kind, setKind] = useState('disk');
  const [pub, setPub] = useState(false);
  const [sent, setSent] = useState<[number, number]>();
  const fileInput = useRef<HTMLInputElement>(null);
  const ctl = useRef<AbortController | null>(null);
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!file) {
      form.place('image', 'error-image', 'choose a file to upload');
      return;
    }
    ctl.current = new AbortController();
    const ok = await form.run(async () => {
      onStarted(await uploadImage(project, name.trim(), kind, file, pub, (a, b) => setSent([a, b]), ctl.current!.signal));
    });
    setSent(undefined);
    if (ok) {
      setFile(undefined);
      setName('');
      if (fileInput.current) fileInput.current.value = '';
    }
  }
  return (
    <form ref={form.box} className="card" onSubmit={submit} aria-labelledby="upload-h" noValidate>
      <h2 id="upload-h">Upload a file</h2>
      <FormError form={form} testId="upload-error" />
      <Field form={form} name="image" label="File" idPrefix="up" help="qcow2, raw, VMDK, VHD(X) or VDI disks are converted to qcow2; kernels and initrds are kept as they are.">
        {(a) => (
          <input
            {...a}
            ref={fileInput}
            type="file"
            data-testid="upload-file"
            onChange={(e) => {
              const f = e.target.files?.[0];
              setFile(f);
              if (f) {
                if (!name) setName(nameFromFile(f.name));
                setKind(kindFromFile(f.name));
              }
            }}
          />
        )}
      </Field>
      <Field form={form} name="name" label="Name" idPrefix="up">
        {(a) => <input {...a} data-testid="upload-name" value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" spellCheck={false} />}
      </Field>
      <Field form={form} name="kind" label="Kind" idPrefix="up">
        {(a) => <KindSelect attrs={a} testId="upload-kind" value={kind} onChange={setKind} />}
      </Field>
      {superadmin && (
        <Field form={form} name="public" label="Public" idPrefix="up" help="Usable by the VMs of every project.">
          {(a) => <input {...a} type="checkbox" data-testid="upload-public" checked={pub} onChange={(e) => setPub(e.target.checked)} />}
        </Field>
      )}
      <div className="row end">
        {sent && (
          <span role="status" className="muted">
            <progress max={sent[1]} value={sent[0]} aria-label="Upload progress" /> {bytes(sent[0])} of {bytes(sent[1])}
          </span>
        )}
        {form.busy && (
          <button type="button" onClick={() => ctl.current?.abort()}>
            Cancel upload
          </button>
        )}
        <button type="submit" className="primary" data-testid="upload-submit" disabled={form.busy}>
          {form.busy ? 'Uploading…' : 'Upload'}
        </button>
      </div>
    </form>
  );
}

// FromURL asks the server to fetch an image.
function FromURL({ project, superadmin, onStarted }: { project: string; superadmin: boolean; onStarted(op: Operation): void }) {
  const form = useForm(['name', 'kind', 'url', 'labels', 'public']);
  const [f, setF] = useState({ name: '', kind: 'disk', url: '', pub: false });
  async function submit(e: FormEvent) {
    e.preventDefault();
    const ok = await form.run(async () => {
      onStarted(await call<Operation>('POST', '/v1/images' + q({ project }), { name: f.name.trim(), kind: f.kind, url: f.url.trim(), public: f.pub || undefined }));
    });
    if (ok) setF({ name: '', kind: 'disk', url: '', pub: false });
  }
  return (
    <form ref={form.box} className="card" onSubmit={submit} aria-labelledby="url-h" noValidate>
      <h2 id="url-h">Import from a URL</h2>
      <FormError form={form} testId="url-import-error" />
      <Field form={form} name="url" label="URL" idPrefix="url" help="http or https; the server fetches it.">
        {(a) => <input {...a} data-testid="url-import-url" value={f.url} onChange={(e) => setF({ ...f, url: e.target.value, name: f.name || nameFromFile(e.target.value.replace(/[?#].*$/, '')) })} spellCheck={false} placeholder="https://…/disk.qcow2" />}
      </Field>
      <Field form={form} name="name" label="Name" idPrefix="url">
        {(a) => <input {...a} data-testid="url-import-name" value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} autoComplete="off" spellCheck={false} />}
      </Field>
      <Field form={form} name="kind" label="Kind" idPrefix="url">
        {(a) => <KindSelect attrs={a} testId="url-import-kind" value={f.kind} onChange={(kind) => setF({ ...f, kind })} />}
      </Field>
      {superadmin && (
        <Field form={form} name="public" label="Public" idPrefix="url">
          {(a) => <input {...a} type="checkbox" checked={f.pub} onChange={(e) => setF({ ...f, pub: e.target.checked })} />}
        </Field>
      )}
      <div className="row end">
        <button type="submit" className="primary" data-testid="url-import-submit" disabled={form.busy}>
          {form.busy ? 'Starting…' : 'Import'}
        </button>
      </div>
    </form>
  );
}

function Detail({ img, project }: { img: Image; project: string }) {
  const rows: [string, string][] = [
    ['Project', `${img.project}${owner(img, project) === 'public' ? ' (public)' : ''}`],
    ['Kind', img.kind],
    ['State', img.state + (img.message ? `: ${img.message}` : '')],
    ['Visibility', img.public ? 'public: usable by the VMs of every project' : `private to ${img.project}`],
    ['Format', img.format ? `${img.format}${img.sourceFormat && img.sourceFormat !== img.format ? ` (imported from ${img.sourceFormat})` : ''}` : ''],
    ['Size', bytes(img.sizeBytes)],
    ['Virtual size', bytes(img.virtualSizeBytes)],
    ['SHA-256', img.sha256 ?? ''],
    ['Source', img.source ?? 'uploaded'],
    ['Created', img.createdAt ? new Date(img.createdAt).toLocaleString() : ''],
    ['Labels', Object.entries(img.labels ?? {}).map(([k, v]) => (v ? `${k}=${v}` : k)).join(', ')],
  ];
  return (
    <section className="card" aria-labelledby="img-h" data-testid="image-detail">
      <h2 id="img-h">{img.name}</h2>
      <dl className="summary">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd className={k === 'SHA-256' ? 'mono' : undefined}>{v || '—'}</dd>
          </div>
        ))}
      </dl>
    </section>
  );
}

export function Images() {
  const s = useSession();
  const project = s.project;
  const { search } = useLocation();
  const params = new URLSearchParams(search);
  const selected = params.get('image') ?? '';
  const [filter, setFilter] = useState('');
  const [started, setStarted] = useState<Operation>();
  const op = useOperation(started?.id, started);
  const [ask, setAsk] = useState<Image>();
  const [actErr, setActErr] = useState<unknown>();
  const live = useLiveList<Image>(
    (sig) => listAll<Image>('/v1/images', { project }, sig),
    (e) => (e.image && (e.image.project === project || e.image.public || e.action === 'deleted') ? e.image : undefined),
    imageKey,
    [project],
    60_000,
  );
  const rows = useMemo(() => visibleImages(live.items, project, filter), [live.items, project, filter]);
  const sel = live.items.find((i) => imageKey(i) === selected);
  const mayDelete = s.can('image.delete', project);
  const mayShare = s.superadmin && s.offers(adminRoutes.imagePublic);
  const pick = (img?: Image) => navigate('/images' + (img ? `?image=${encodeURIComponent(imageKey(img))}` : ''), true);

  const act = async (f: () => Promise<unknown>) => {
    setActErr(undefined);
    try {
      await f();
    } catch (e) {
      setActErr(e);
    }
  };
  const share = (img: Image) =>
    act(async () => {
      const got = await setImagePublic(img, !img.public);
      // The answer is newer than the list; the event follows anyway.
      if (got?.name) live.reload();
    });
  const remove = (img: Image) =>
    act(async () => {
      setAsk(undefined);
      const o = await call<Operation | undefined>('DELETE', `/v1/images/${encodeURIComponent(img.name)}${q({ project: img.project })}`);
      if (o?.id) setStarted(o);
      if (selected === imageKey(img)) pick();
      live.reload();
    });

  return (
    <div>
      <div className="row">
        <h1>Images</h1>
        <span className="muted">in {project}, and the public ones</span>
        <div className="spacer" />
        <input type="search" aria-label="Search images" placeholder="Search name or project" value={filter} onChange={(e) => setFilter(e.target.value)} />
        <span className="muted" data-testid="images-count" data-loaded={live.loaded}>
          {live.loaded ? `${rows.length} images` : 'loading…'}
        </span>
      </div>
      <ErrorBox err={live.error ?? actErr} testId="images-error" />
      {op && <OpStatus op={op} />}
      <div className="tablewrap">
        <table data-testid="images-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">State</th>
              <th scope="col">Project</th>
              <th scope="col">Size</th>
              <th scope="col">Virtual size</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((img) => {
              const mine = owner(img, project) === 'own';
              const key = imageKey(img);
              return (
                <tr key={key} data-testid={`image-row-${img.project}-${img.name}`} aria-selected={key === selected}>
                  <td>
                    <button type="button" className="link" aria-current={key === selected ? 'true' : undefined} onClick={() => pick(key === selected ? undefined : img)}>
                      {img.name}
                    </button>
                  </td>
                  <td>{img.kind}</td>
                  <td>
                    <State s={img.state} />
                  </td>
                  <td>
                    {img.project}{' '}
                    {img.public && (
                      <span className="badge" data-testid="image-public">
                        public
                      </span>
                    )}
                  </td>
                  <td className="num">{bytes(img.sizeBytes)}</td>
                  <td className="num">{bytes(img.virtualSizeBytes)}</td>
                  <td className="muted">{ago(img.createdAt)}</td>
                  <td className="actions">
                    {(mine || s.superadmin) && mayShare && img.state === 'ready' && (
                      <button type="button" data-testid={`image-share-${img.name}`} onClick={() => void share(img)}>
                        {img.public ? 'Make private' : 'Make public'}
                      </button>
                    )}{' '}
                    {mine && mayDelete && (
                      <button type="button" className="danger" data-testid={`image-delete-${img.name}`} onClick={() => setAsk(img)}>
                        Delete
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
        {live.loaded && rows.length === 0 && <p className="muted empty">No images{filter ? ' match' : ' yet'}.</p>}
      </div>
      {sel && <Detail img={sel} project={project} />}
      {s.can('image.create', project) ? (
        <div className="grid two">
          <Upload project={project} superadmin={s.superadmin} onStarted={setStarted} />
          <FromURL project={project} superadmin={s.superadmin} onStarted={setStarted} />
        </div>
      ) : (
        <p className="muted">Your role in {project} does not add images.</p>
      )}
      {ask && (
        <Confirm
          title={`Delete image ${ask.name}?`}
          okLabel="Delete"
          danger
          body={<p>The image {ask.name} of {ask.project} is deleted. VMs made from it keep their disks; the API refuses while a VM boots from it.</p>}
          onOK={() => void remove(ask)}
          onCancel={() => setAsk(undefined)}
        />
      )}
    </div>
  );
}
