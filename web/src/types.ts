// The API's JSON, as far as the console reads it (see api/*.go).
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
    nics?: { network: string; mac?: string }[];
    boot?: { kernel?: string; initrd?: string; cmdline?: string };
    provider?: ProviderRef;
    lease?: Lease;
    deletion?: { requestedAt: string };
    onCrash?: string;
  };
  status: {
    powerState: string;
    ips?: string[];
    pid?: number;
    reason?: string;
    stopCause?: string;
    driver?: string;
    startedAt?: string;
    updatedAt?: string;
    error?: { message: string };
  };
}

export interface Host extends Meta {
  provider?: ProviderRef;
  spec?: { unschedulable?: boolean };
  status: {
    state: string;
    cpus: number;
    memoryMiB: number;
    accel: string;
    lastHeartbeat?: string;
    allocated: { vcpus: number; memoryMiB: number; vms: number };
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
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  version?: number;
}

export interface Image extends Meta {
  kind: string;
  state: string;
  public?: boolean;
  virtualSizeBytes?: number;
  sizeBytes?: number;
}

export interface Provider extends Meta {
  spec: { type: string; url?: string };
  status: {
    state: string;
    message?: string;
    stale?: boolean;
    inventory?: { datacenters: number; clusters: number; hosts: number; vms: number };
  };
}

export interface WhoAmI {
  kind: string;
  name: string;
  superadmin?: boolean;
  project?: string;
  role?: string;
  roles?: Record<string, string>;
}

export interface Project extends Meta {
  spec: { description?: string; maxLeaseSeconds?: number };
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
  action: string;
  object: { kind: string; name: string; project?: string };
  vm?: VM;
  host?: Host;
  operation?: Operation;
  provider?: Provider;
}
