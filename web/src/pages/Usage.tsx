import { useEffect, useState } from 'react';
import { call, q } from '../api';
import { cpuPercent, sparkPoints, usageNeverComes, type Sample } from '../lib/stats';

const keep = 40;

function Spark({ id, label, values, unit, floor }: { id: string; label: string; values: number[]; unit: string; floor: number }) {
  const last = values.length ? values[values.length - 1] : undefined;
  return (
    <figure className="spark" data-testid={id}>
      <figcaption>
        {label}: {last === undefined ? '…' : `${last.toFixed(last < 10 ? 1 : 0)} ${unit}`}
      </figcaption>
      <svg viewBox="0 0 160 32" width="160" height="32" role="img" aria-label={`${label} over the last samples`}>
        <polyline points={sparkPoints(values, 160, 30, floor)} fill="none" stroke="currentColor" strokeWidth="1.5" />
      </svg>
    </figure>
  );
}

// Usage polls the VM's usage while it runs and draws CPU and memory; it
// shows nothing where the VM's driver reports none.
export function Usage({ project, name, running }: { project: string; name: string; running: boolean }) {
  const [samples, setSamples] = useState<Sample[]>([]);
  const [none, setNone] = useState(false);
  useEffect(() => {
    if (!running) return;
    let stop = false;
    const poll = () =>
      call<Sample>('GET', `/v1/vms/${encodeURIComponent(name)}/stats${q({ project })}`).then(
        (s) => !stop && setSamples((xs) => [...xs, s].slice(-keep)),
        (e) => !stop && usageNeverComes(e) && setNone(true),
      );
    void poll();
    const t = setInterval(poll, 3000);
    return () => {
      stop = true;
      clearInterval(t);
    };
  }, [project, name, running]);
  if (!running || none || samples.length === 0) return null;
  return (
    <div className="row usage">
      <Spark id="spark-cpu" label="CPU" values={cpuPercent(samples)} unit="%" floor={10} />
      <Spark id="spark-mem" label="Memory" values={samples.map((s) => s.memoryBytes / 1048576)} unit="MiB" floor={1} />
    </div>
  );
}
