// Usage history plots: a host's, a VM's, or a cluster's (its hosts'
// summed), CPU and memory over a chosen span, drawn in SVG. The mean of
// each step is the line, its largest sample the faint line above, the
// capacity the dashed line.
import { useEffect, useState } from 'react';
import { call, listAll, type Host } from '../api';
import { ErrorBox } from '../ui';
import { mib } from '../lib/units';
import { paths, sumHistories, type UsageHistory } from '../lib/usagehistory';

const spans = ['24h', '7d', '30d', '365d'] as const;
type Span = (typeof spans)[number];

const W = 480;
const H = 90;

function Plot(props: { label: string; u: UsageHistory; mean: (p: UsageHistory['points'][number]) => number; peak: (p: UsageHistory['points'][number]) => number; cap?: number; fmt: (n: number) => string; testId: string }) {
  const { u } = props;
  const since = Date.parse(u.since);
  const until = Date.parse(u.until);
  const stepMs = u.stepSeconds * 1000;
  const pts = u.points ?? [];
  const top = Math.max(props.cap ?? 0, ...pts.map(props.peak), 1e-9);
  const line = (f: (p: UsageHistory['points'][number]) => number) => paths(pts.map((p) => ({ t: Date.parse(p.time), v: f(p) })), since, until, stepMs, top, W, H);
  const last = pts.length ? props.mean(pts[pts.length - 1]) : undefined;
  return (
    <figure className="usage-plot" data-testid={props.testId}>
      <figcaption className="small">
        {props.label}: {last === undefined ? 'nothing sampled' : `${props.fmt(last)} now`}, peak {props.fmt(pts.length ? Math.max(...pts.map(props.peak)) : 0)}
        {props.cap ? ` of ${props.fmt(props.cap)}` : ''}
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} width="100%" height={H} role="img" aria-label={`${props.label} of ${u.name} over time`} preserveAspectRatio="none">
        <rect x="0" y="0" width={W} height={H} fill="none" stroke="currentColor" strokeOpacity="0.15" />
        {props.cap ? <line x1="0" x2={W} y1={H - (props.cap / top) * H} y2={H - (props.cap / top) * H} stroke="currentColor" strokeOpacity="0.5" strokeDasharray="4 3" /> : null}
        {line(props.peak).map((d, i) => (
          <polyline key={`p${i}`} points={d} fill="none" stroke="var(--accent)" strokeOpacity="0.35" strokeWidth="1" />
        ))}
        {line(props.mean).map((d, i) => (
          <polyline key={`m${i}`} points={d} fill="none" stroke="var(--accent)" strokeWidth="1.5" data-testid={`${props.testId}-line`} />
        ))}
      </svg>
      <div className="row small muted">
        <span>{new Date(since).toLocaleString()}</span>
        <div className="spacer" />
        <span>{new Date(until).toLocaleString()}</span>
      </div>
    </figure>
  );
}

const cores = (n: number) => `${Math.round(n * 100) / 100} cores`;

// UsagePlots draws one history's CPU and memory.
export function UsagePlots({ u, testId }: { u: UsageHistory; testId: string }) {
  return (
    <div className="usage-plots" data-testid={testId} data-points={u.points?.length ?? 0}>
      <Plot label="CPU" u={u} mean={(p) => p.cpu} peak={(p) => p.cpuMax} cap={u.cpus} fmt={cores} testId={`${testId}-cpu`} />
      <Plot label="Memory" u={u} mean={(p) => p.memoryBytes / 2 ** 20} peak={(p) => p.memoryMaxBytes / 2 ** 20} cap={u.memoryMiB} fmt={mib} testId={`${testId}-memory`} />
    </div>
  );
}

function SpanPicker({ span, set }: { span: Span; set: (s: Span) => void }) {
  return (
    <label className="inline">
      Over{' '}
      <select value={span} onChange={(e) => set(e.target.value as Span)} data-testid="usage-span">
        {spans.map((s) => (
          <option key={s} value={s}>
            {s === '365d' ? 'a year' : `the last ${s}`}
          </option>
        ))}
      </select>
    </label>
  );
}

const usagePath = (kind: 'hosts' | 'vms', name: string, span: Span, project?: string) =>
  `/v1/${kind}/${encodeURIComponent(name)}/usage?since=${span}${project ? `&project=${encodeURIComponent(project)}` : ''}`;

// UsageChart is a host's or a VM's history, with its span picker.
export function UsageChart({ kind, name, project }: { kind: 'hosts' | 'vms'; name: string; project?: string }) {
  const [span, setSpan] = useState<Span>('24h');
  const [u, setU] = useState<UsageHistory>();
  const [err, setErr] = useState<unknown>();
  useEffect(() => {
    const ac = new AbortController();
    setErr(undefined);
    call<UsageHistory>('GET', usagePath(kind, name, span, project), undefined, ac.signal).then(setU, (e) => ac.signal.aborted || setErr(e));
    return () => ac.abort();
  }, [kind, name, span, project]);
  return (
    <section className="card" aria-labelledby="usage-h" data-testid="usage-chart">
      <div className="row">
        <h2 id="usage-h">Usage history</h2>
        <div className="spacer" />
        <SpanPicker span={span} set={setSpan} />
      </div>
      <ErrorBox err={err} testId="usage-error" />
      {u && <UsagePlots u={u} testId="usage" />}
      <p className="muted small">The sum of the VMs' use as the host's agent sampled it: the line is each step's mean, the faint line its peak, the dashed line the capacity.</p>
    </section>
  );
}

// ClusterUsage is every ready Polyvisor host's history and their sum (the
// forecast's cluster of Polyvisor's own hosts), for the Capacity page. A
// provider's hosts keep no history.
export function ClusterUsage() {
  const [span, setSpan] = useState<Span>('24h');
  const [hs, setHs] = useState<UsageHistory[]>();
  const [clusters, setClusters] = useState<Map<string, string[]>>(new Map());
  const [err, setErr] = useState<unknown>();
  useEffect(() => {
    const ac = new AbortController();
    setErr(undefined);
    listAll<Host>('/v1/hosts', {}, ac.signal)
      .then(async (hosts) => {
        const shown = hosts.filter((h) => h.status.state === 'ready');
        const byCluster = new Map<string, string[]>();
        // Polyvisor's own hosts are one cluster, as in the forecast; a
        // provider's hosts go by its name and their cluster. A provider's
        // history is kept by the leading server: another answers 409 and
        // those hosts are left out.
        for (const h of shown) {
          const c = h.provider ? `${h.provider.name}/${h.provider.cluster ?? ''}` : '';
          byCluster.set(c, [...(byCluster.get(c) ?? []), h.name]);
        }
        setClusters(byCluster);
        const got = await Promise.all(shown.map((h) => call<UsageHistory>('GET', usagePath('hosts', h.name, span), undefined, ac.signal).catch(() => undefined)));
        setHs(got.filter((x): x is UsageHistory => !!x));
      })
      .catch((e) => ac.signal.aborted || setErr(e));
    return () => ac.abort();
  }, [span]);
  return (
    <section data-testid="cluster-usage">
      <div className="row">
        <h2>Utilization history</h2>
        <div className="spacer" />
        <SpanPicker span={span} set={setSpan} />
      </div>
      <ErrorBox err={err} testId="cluster-usage-error" />
      {hs && hs.length === 0 && <p className="muted">No host answered with a history.</p>}
      {hs &&
        [...clusters.entries()].map(([c, names]) => {
          const answered = hs.filter((h) => names.includes(h.name));
          if (c && answered.length === 0) return null;
          const sum = sumHistories(c || "Polyvisor's hosts", answered);
          return (
            <details key={c} open>
              <summary>
                {c ? `Cluster ${c}` : "Polyvisor's hosts"} ({names.length} host{names.length === 1 ? '' : 's'}): their sum, then each
              </summary>
              {sum && <UsagePlots u={sum} testId="cluster-usage-sum" />}
              {hs
                .filter((h) => names.includes(h.name))
                .map((h) => (
                  <div key={h.name}>
                    <h3 className="small">{h.name}</h3>
                    <UsagePlots u={h} testId="host-usage" />
                  </div>
                ))}
            </details>
          );
        })}
    </section>
  );
}
