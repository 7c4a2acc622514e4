// The API's JSON, as far as the console reads it (see api/*.go).
import type { VMPlan, VMProgress } from './lib/v2v';
export type { VMPlan, VMProgress };
export interface Meta {
  name: string;
  project?: string;
  uid: string;
  labels?: Record<string, string>;
  version: number;
  generation?: number;
  createdAt: string;
  updatedAt?: string;
}

export interface ProviderRef {
  name: string;
  type?: string;
  id?: string;
  path?: string;
  datacenter?: string;
  cluster?: string;
  template?: string;
  guestOS?: string;
  stale?: boolean;
}

export interface Lease {
  expiresAt: string;
  deleteAt: string;
  stoppedAt?: string;
}

export interface VM extends Meta {
  spec: {
    host: string;
    vcpus: number;
    memoryMiB: number;
    powerState: string;
    disks?: { name: string; image?: string; sizeMiB?: number }[];
    nics?: NIC[];
    boot?: { kernel?: string; initrd?: string; cmdline?: string; firmware?: string };
    provider?: ProviderRef;
    lease?: Lease;
    deletion?: { requestedAt: string };
    onCrash?: string;
    // migration is set while the VM moves to target (vm.migrate).
    migration?: { operation: string; target: string };
    volumes?: { volume: string }[];
    // ha restart: restarted on another host once its lost host is fenced (docs/HA.md).
    ha?: string;
    haRestart?: { operation: string; from: string; to: string; at: string };
  };
  status: {
    powerState: string;
    ips?: string[];
    pid?: number;
    console?: { serial?: string; vnc?: string };
    reason?: string;
    stopCause?: string;
    driver?: string;
    startedAt?: string;
    updatedAt?: string;
    error?: { message: string };
    migration?: MigrationStatus;
    volumes?: { volume: string; device: string }[];
  };
}

// MigrationStatus is how a VM's migration goes, as its host reports it.
export interface MigrationStatus {
  operation: string;
  // phase: storage, memory, switchover, completed or failed.
  phase: string;
  diskTotal?: number;
  diskDone?: number;
  memoryTotal?: number;
  memorySent?: number;
  memoryRemaining?: number;
  dirtyRate?: number;
  expectedDowntimeMs?: number;
  throttle?: number;
  error?: string;
}

// HostDrain is a host.drain operation's result: each VM's move.
export interface HostDrain {
  host: string;
  moves: DrainMove[] | null;
}

export interface DrainMove {
  vm: string; // project/name
  target?: string;
  operation?: string;
  outcome: string; // migrated or failed
  error?: string;
}

export interface HostFence {
  state: 'pending' | 'fenced' | 'returned' | 'unknown';
  lastHeartbeat: string;
  deadline: string;
  fencedAt?: string;
  by?: string;
  hook?: string;
  returnedAt?: string;
  vms?: string[];
}

export interface Host extends Meta {
  provider?: ProviderRef;
  spec?: { unschedulable?: boolean };
  fence?: HostFence;
  fenceTimeoutMS?: number;
  status: {
    state: string;
    cpus: number;
    memoryMiB: number;
    diskTotalMiB?: number;
    diskFreeMiB?: number;
    accel: string;
    accelReason?: string;
    qemuVersion?: string;
    agentVersion?: string;
    address?: string;
    drivers?: string[];
    lastHeartbeat?: string;
    allocated: { vcpus: number; memoryMiB: number; vms: number };
    // What the scheduler offers: CPUs × overcommit, memory less the reservation.
    capacity?: { vcpus: number; memoryMiB: number };
    // The host's keeper (docs/HA.md): only a host whose last heartbeat said
    // it was armed has its HA VMs restarted elsewhere on its silence alone.
    keeper?: { armed: boolean; message?: string; lastFired?: string };
  };
}

export interface Operation {
  id: string;
  kind: string;
  target: { kind: string; name: string; project?: string };
  status: string;
  progress: number;
  message?: string;
  error?: { code?: string; message: string };
  // result is what the operation produced (a host.drain's HostDrain).
  result?: unknown;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  version?: number;
}

export interface Image extends Meta {
  kind: string;
  state: string;
  public?: boolean;
  format?: string;
  sourceFormat?: string;
  virtualSizeBytes?: number;
  sizeBytes?: number;
  sha256?: string;
  message?: string;
  source?: string;
}

export interface Provider extends Meta {
  spec: { type: string; url?: string; username?: string; caCert?: string; insecure?: boolean };
  status: {
    state: string;
    message?: string;
    stale?: boolean;
    lastSync?: string;
    inventory?: { datacenters: number; clusters: number; hosts: number; datastores?: number; networks?: number; vms: number };
    capabilities?: Record<string, boolean>;
  };
}

export interface InventoryItem {
  id: string;
  name: string;
  datacenter?: string;
  capacityBytes?: number;
  freeBytes?: number;
}

export interface ProviderInventory {
  datacenters: InventoryItem[] | null;
  clusters: InventoryItem[] | null;
  datastores: InventoryItem[] | null;
  networks: InventoryItem[] | null;
  templates: InventoryItem[] | null;
}

export interface WhoAmI {
  kind: string;
  name: string;
  superadmin?: boolean;
  tokenId?: string;
  project?: string;
  role?: string;
  roles?: Record<string, string>;
}

export type Numbers = Record<string, number | null | undefined>;

export interface Project extends Meta {
  spec: {
    description?: string;
    maxLeaseSeconds?: number;
    leaseGraceSeconds?: number;
    quota?: Numbers;
    members?: Record<string, string>;
  };
  status?: { usage?: Numbers };
}

export interface Member {
  user: string;
  role: string;
}

export interface QuotaReport {
  project: string;
  limits: Numbers;
  usage: Numbers;
}

export interface User extends Meta {
  displayName?: string;
  superadmin?: boolean;
  disabled?: boolean;
  hasPassword: boolean;
  roles?: Record<string, string>;
}

export interface Token {
  id: string;
  name: string;
  kind: string;
  user: string;
  project?: string;
  role?: string;
  createdAt: string;
  expiresAt?: string;
}

export interface TokenCreated extends Token {
  secret: string;
}

export interface Snapshot {
  name: string;
  description?: string;
  createdAt?: string;
  current?: boolean;
}

export interface AuditRecord {
  id: string;
  time: string;
  actor: { kind: string; name?: string; token?: string };
  remote?: string;
  requestId?: string;
  method?: string;
  path?: string;
  action: string;
  project?: string;
  resource?: { kind: string; name: string; project?: string };
  operationId?: string;
  outcome: string;
  status?: number;
  message?: string;
}

export interface Event {
  type: string;
  time?: string;
  // The store revision of the change, the same at every server.
  revision?: number;
  action: string;
  object: { kind: string; name: string; project?: string };
  vm?: VM;
  host?: Host;
  operation?: Operation;
  provider?: Provider;
  image?: Image;
  network?: Network;
  subnet?: Subnet;
  port?: Port;
  securityGroup?: SecurityGroup;
  floatingIP?: FloatingIP;
  migration?: VMMigration;
}

// A VM's NIC: on "user" (NAT) or a network of the project, through a port.
export interface NIC {
  network: string;
  mac?: string;
  ip?: string;
  port?: string;
  securityGroups?: string[];
}

export interface Network extends Meta {
  spec: { description?: string; type: string; bridge?: string; external?: boolean; nat?: boolean; mtu?: number };
  status: { vni?: number; hosts?: string[]; ports: number };
  provider?: ProviderRef;
}

export interface Subnet extends Meta {
  spec: { network: string; cidr: string; gateway?: string; dhcp?: boolean; dnsServers?: string[]; pools?: { start: string; end: string }[] };
  status: { used: number };
}

export interface Port extends Meta {
  spec: { network: string; mac: string; fixedIPs: { subnet: string; ip: string }[]; securityGroups?: string[]; portSecurity?: boolean; vm?: string; nic?: number; deleteWithVM?: boolean };
  status: { host?: string; state?: string; message?: string };
}

export interface SecurityGroupRule {
  id?: string;
  direction: string;
  etherType?: string;
  protocol?: string;
  portMin?: number;
  portMax?: number;
  remoteCIDR?: string;
  remoteGroup?: string;
}

export interface SecurityGroup extends Meta {
  spec: { description?: string; rules?: SecurityGroupRule[] };
}

export interface FloatingIP extends Meta {
  spec: { network: string; address?: string; port?: string };
  status: { host?: string; fixedIP?: string };
}

// Storage pools and volumes (api/storage.go).
export interface PoolHostStatus {
  host: string;
  totalMiB: number;
  freeMiB: number;
  usedMiB: number;
  error?: string;
}

export interface Pool extends Meta {
  spec: { kind: string; path: string; hosts: string[]; projects?: string[]; address?: string; images?: boolean };
  status: { hosts?: PoolHostStatus[] };
}

export interface VolumeLimits {
  iops?: number;
  bps?: number;
}

export interface Volume extends Meta {
  spec: {
    pool: string;
    host: string;
    path: string;
    sizeMiB: number;
    source?: { image?: string; volume?: string; snapshot?: string };
    attachedTo?: string;
    limits?: VolumeLimits;
    snapshots?: string[];
  };
  status: { state: string; sizeMiB?: number; snapshots?: string[]; error?: string; observedGeneration: number };
}

// Capacity plans (POST /v1/plans/...): see docs/PLANNING.md.
export interface PlanUsage {
  cpu: number;
  memoryMiB: number;
}
export interface PlanOptions {
  targetUtilization?: number;
  percentile?: number;
  crossProvider?: boolean;
}
export interface PlanHost {
  name: string;
  cluster?: string;
  provider?: string;
  cordoned?: boolean;
  capacity: PlanUsage;
  before: PlanUsage;
  after: PlanUsage;
  vmsBefore: number;
  vmsAfter: number;
}
export interface PlanMove {
  vm: string;
  from?: string;
  to: string;
}
export interface PlanUnplaced {
  vm: string;
  reason: string;
}
export interface Plan {
  source?: string;
  warnings?: string[] | null;
  options: PlanOptions;
  hostsBefore: number;
  hostsAfter: number;
  lowerBound: number;
  hosts: PlanHost[] | null;
  moves: PlanMove[] | null;
  unplaced?: PlanUnplaced[] | null;
  savings: { hosts: number; freed?: string[] | null; cpus: number; memoryMiB: number };
}
export interface ForecastTrend {
  capacity: number;
  now: number;
  perDay: number;
  points: number;
  runsOutAt?: string;
  daysLeft?: number;
  note?: string;
}
export interface ClusterForecast {
  cluster: string;
  hosts: number;
  vms: number;
  cpu: ForecastTrend;
  memory: ForecastTrend;
  runsOut?: string;
  runsOutAt?: string;
}
export interface Forecast {
  source?: string;
  warnings?: string[] | null;
  options: PlanOptions;
  clusters: ClusterForecast[] | null;
}

// Migrations of VMs from other hypervisors (api/v2v.go, docs/MIGRATION.md).

export interface VMMigrationSource {
  kind: string; // provider, upload or url
  provider?: string;
  vms?: { id: string; name?: string }[] | null;
  url?: string;
  format?: string; // ova or disk
  files?: { name: string; sizeBytes: number; uploaded?: boolean }[] | null;
  hardware?: { name?: string; vcpus?: number; memoryMiB?: number; firmware?: string; guestOS?: string; diskBus?: string; macs?: string[] };
}

export interface VMMigration extends Meta {
  spec: {
    source: VMMigrationSource;
    host?: string;
    networkMap?: Record<string, string>;
    parallel: number;
    sourceDisposition?: string;
    cutover?: string;
    start?: boolean;
    cancel?: boolean;
  };
  status: {
    state: string;
    server?: string;
    createdBy?: string;
    vms?: VMProgress[] | null;
    error?: string;
    copyBytes?: number;
    estimatedSeconds?: number;
    startedAt?: string;
    finishedAt?: string;
    reportedAt?: string;
  };
}
