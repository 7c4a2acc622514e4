// Searching, filtering and sorting the VM table.
export interface VMRow {
  name: string;
  project?: string;
  labels?: Record<string, string>;
  spec: { host: string; vcpus: number; memoryMiB: number; provider?: { name: string; datacenter?: string; cluster?: string } };
  status: { powerState: string; ips?: string[] };
}

export interface VMQuery {
  q: string; // free text: name, label key or value, IP
  state: string;
  host: string;
  provider: string; // provider name, "polyvisor" for own hosts
  label: string; // k=v or k
  sort: string; // column, "-" prefix for descending
}

export const emptyQuery: VMQuery = { q: '', state: '', host: '', provider: '', label: '', sort: 'name' };

export function providerOf(vm: VMRow): string {
  return vm.spec.provider?.name ?? 'polyvisor';
}

export function matches(vm: VMRow, q: VMQuery): boolean {
  if (q.state && vm.status.powerState !== q.state) return false;
  if (q.host && vm.spec.host !== q.host) return false;
  if (q.provider && providerOf(vm) !== q.provider) return false;
  if (q.label) {
    const [k, v] = q.label.split('=', 2);
    const got = vm.labels?.[k];
    if (got === undefined || (v !== undefined && got !== v)) return false;
  }
  if (q.q) {
    const t = q.q.toLowerCase();
    const hay = [vm.name, ...(vm.status.ips ?? []), ...Object.entries(vm.labels ?? {}).flat()];
    if (!hay.some((h) => h.toLowerCase().includes(t))) return false;
  }
  return true;
}

const keys: Record<string, (vm: VMRow) => string | number> = {
  name: (vm) => vm.name,
  project: (vm) => vm.project ?? '',
  state: (vm) => vm.status.powerState,
  host: (vm) => vm.spec.host,
  vcpus: (vm) => vm.spec.vcpus,
  memory: (vm) => vm.spec.memoryMiB,
  provider: (vm) => providerOf(vm),
};

export function sortVMs<T extends VMRow>(vms: T[], sort: string): T[] {
  const desc = sort.startsWith('-');
  const key = keys[desc ? sort.slice(1) : sort] ?? keys.name;
  const out = [...vms];
  out.sort((a, b) => {
    const x = key(a);
    const y = key(b);
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return (desc ? -c : c) || a.name.localeCompare(b.name);
  });
  return out;
}

export function filterVMs<T extends VMRow>(vms: T[], q: VMQuery): T[] {
  return sortVMs(
    vms.filter((vm) => matches(vm, q)),
    q.sort,
  );
}

// Inventory is the tree provider → datacenter/cluster → host → VMs; the
// middle level is "" for Polyvisor's own hosts.
export type Inventory<T extends VMRow = VMRow> = Map<string, Map<string, Map<string, T[]>>>;

export function inventory<T extends VMRow>(vms: T[]): Inventory<T> {
  const t: Inventory<T> = new Map();
  const get = <K, V>(m: Map<K, V>, k: K, mk: () => V): V => {
    let v = m.get(k);
    if (v === undefined) {
      v = mk();
      m.set(k, v);
    }
    return v;
  };
  for (const vm of [...vms].sort((a, b) => a.name.localeCompare(b.name))) {
    const p = vm.spec.provider;
    const place = p ? [p.datacenter, p.cluster].filter(Boolean).join('/') : '';
    const hosts = get(get(t, providerOf(vm), () => new Map()), place, () => new Map());
    get(hosts, vm.spec.host || '(unplaced)', () => [] as T[]).push(vm);
  }
  return t;
}

// distinct lists the values a column takes, for a filter's choices.
export function distinct<T extends VMRow>(vms: T[], f: (vm: T) => string): string[] {
  return [...new Set(vms.map(f).filter(Boolean))].sort((a, b) => a.localeCompare(b));
}

// vmPath is the VM page's URL.
export function vmPath(vm: { name: string; project?: string }): string {
  return `/vms/${encodeURIComponent(vm.project || 'default')}/${encodeURIComponent(vm.name)}`;
}
