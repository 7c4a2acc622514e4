// The create wizard's form and the VMCreate body it makes.

import { APIError } from './errors';

// WizardNIC is one NIC: on "user" (NAT) or a network of the project, with
// an address and a security group when the server should not choose.
export interface WizardNIC {
  network: string;
  ip: string;
  secgroup: string;
}

export const userNIC: WizardNIC = { network: 'user', ip: '', secgroup: '' };

export interface WizardForm {
  name: string;
  image: string;
  vcpus: string;
  memory: string;
  nics: WizardNIC[];
  userData: string;
  host: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  firmware: string; // bios (the default) or efi
  labels: string; // "k=v, k2=v2"
  leaseHours: string; // blank: the project's default
  start: boolean;
  // The root disk: an overlay of the image on the VM's host (""), a
  // volume made from the image in rootPool ("pool"), or an existing
  // volume rootVolume ("volume").
  rootDisk: '' | 'pool' | 'volume';
  rootPool: string;
  rootVolume: string;
  deleteRootVolume: boolean;
}

export const emptyWizard: WizardForm = {
  name: '',
  image: '',
  vcpus: '1',
  memory: '512',
  nics: [userNIC],
  userData: '',
  host: '',
  kernel: '',
  initrd: '',
  cmdline: '',
  firmware: 'bios',
  labels: '',
  leaseHours: '',
  start: true,
  rootDisk: '',
  rootPool: '',
  rootVolume: '',
  deleteRootVolume: false,
};

// parseLabels reads "k=v, k2=v2" (commas or new lines between pairs).
export function parseLabels(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(/[,\n]/)) {
    const p = part.trim();
    if (!p) continue;
    const i = p.indexOf('=');
    if (i < 0) out[p] = '';
    else out[p.slice(0, i).trim()] = p.slice(i + 1).trim();
  }
  return out;
}

// num keeps what the user typed checkable by the server: an empty or
// non-numeric field goes as 0, which the API names as the bad field.
const num = (s: string) => {
  const n = Number(s.trim());
  return Number.isFinite(n) && s.trim() !== '' ? n : 0;
};

// nicBody is a NIC of the VMCreate body: an address and a group only on a
// network of the project.
export function nicBody(n: WizardNIC): Record<string, unknown> {
  const nic: Record<string, unknown> = { network: n.network || 'user' };
  if (nic.network === 'user') return nic;
  if (n.ip.trim()) nic.ip = n.ip.trim();
  if (n.secgroup) nic.securityGroups = [n.secgroup];
  return nic;
}

export function createBody(f: WizardForm): Record<string, unknown> {
  const body: Record<string, unknown> = {
    name: f.name.trim(),
    vcpus: num(f.vcpus),
    memoryMiB: num(f.memory),
    nics: (f.nics.length ? f.nics : [userNIC]).map(nicBody),
    powerState: f.start ? 'running' : 'stopped',
  };
  if (f.rootDisk === 'volume') {
    body.rootVolume = f.rootVolume;
  } else {
    if (f.image) body.disks = [{ name: 'root', image: f.image }];
    if (f.rootDisk === 'pool') {
      body.rootPool = f.rootPool;
      if (f.deleteRootVolume) body.deleteRootVolume = true;
    }
  }
  const efi = f.firmware !== '' && f.firmware !== 'bios';
  if (f.kernel || f.initrd || f.cmdline.trim() || efi) {
    const boot: Record<string, string> = {};
    if (f.kernel) boot.kernel = f.kernel;
    if (f.initrd) boot.initrd = f.initrd;
    if (f.cmdline.trim()) boot.cmdline = f.cmdline.trim();
    if (efi) boot.firmware = f.firmware;
    body.boot = boot;
  }
  if (f.userData.trim()) body.cloudInit = { userData: f.userData };
  if (f.host) body.host = f.host;
  const labels = parseLabels(f.labels);
  if (Object.keys(labels).length) body.labels = labels;
  if (f.leaseHours.trim()) body.leaseSeconds = Math.round(num(f.leaseHours) * 3600);
  return body;
}

// imageRef is how a VM of project names an image: bare in its own
// project, "<project>/<name>" for a public image of another.
export function imageRef(img: { name: string; project?: string }, project: string): string {
  return !img.project || img.project === project ? img.name : `${img.project}/${img.name}`;
}

// nicField names the field of an error the API gives for a NIC added to a
// VM as the add-a-NIC form's inputs do: "nics[1].ip" is "ip". Other errors
// are returned as they are.
export function nicField(x: unknown): unknown {
  if (!(x instanceof APIError) || !x.field) return x;
  const m = /^nics\[\d+\]\.(.+)$/.exec(x.field);
  return m ? new APIError(x.status, { ...x.body, field: m[1] }, x.retryAfter) : x;
}
