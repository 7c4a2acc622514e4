// The API's one error shape, and where a form shows it.
export interface APIErrorBody {
  code: string;
  message: string;
  field?: string;
  details?: Record<string, string>;
}

export class APIError extends Error {
  constructor(
    public status: number,
    public body: APIErrorBody,
    public retryAfter?: number,
  ) {
    super(describe(status, body, retryAfter));
  }
  get field(): string | undefined {
    return this.body.field;
  }
  get code(): string {
    return this.body.code;
  }
}

function describe(status: number, body: APIErrorBody, retryAfter?: number): string {
  let m = body.message || `HTTP ${status}`;
  if (status === 429 && retryAfter) m += ` (try again in ${retryAfter}s)`;
  return m;
}

// fieldId turns an API field path ("disks[0].image") into the suffix of
// the inline error's test id ("disks-0-image").
export function fieldId(field: string): string {
  return field.replace(/\[(\d+)\]/g, '-$1').replace(/\./g, '-');
}

// The create wizard's inputs ("slots"), and which API fields each one
// answers for. Only one disk and one NIC are made by the wizard, so an
// error about any of them is shown at its one input.
export type Slot = 'name' | 'vcpus' | 'memoryMiB' | 'image' | 'network' | 'userData' | 'host' | 'kernel' | 'initrd' | 'cmdline' | 'firmware' | 'labels' | 'lease' | 'start' | 'rootDisk';

const exact: Record<string, Slot> = {
  name: 'name',
  vcpus: 'vcpus',
  memoryMiB: 'memoryMiB',
  disks: 'image',
  nics: 'network',
  host: 'host',
  'boot.kernel': 'kernel',
  'boot.initrd': 'initrd',
  'boot.cmdline': 'cmdline',
  'boot.firmware': 'firmware',
  boot: 'kernel',
  cloudInit: 'userData',
  labels: 'labels',
  leaseSeconds: 'lease',
  powerState: 'start',
  rootVolume: 'rootDisk',
  rootPool: 'rootDisk',
  deleteRootVolume: 'rootDisk',
};

const prefixes: [RegExp, Slot][] = [
  [/^disks\[\d+\]/, 'image'],
  [/^nics\[\d+\]/, 'network'],
  [/^cloudInit\./, 'userData'],
  [/^labels\./, 'labels'],
];

export function wizardSlot(field: string): Slot | undefined {
  if (exact[field]) return exact[field];
  for (const [re, slot] of prefixes) if (re.test(field)) return slot;
  return undefined;
}

export interface FieldError {
  slot: Slot;
  testId: string; // data-testid of the inline message: "error-" + fieldId
  message: string;
}

// fieldError places an API error beside a wizard input, or gives
// undefined when it belongs in the form's general error box.
export function fieldError(err: unknown): FieldError | undefined {
  if (!(err instanceof APIError) || !err.field) return undefined;
  const slot = wizardSlot(err.field);
  if (!slot) return undefined;
  return { slot, testId: `error-${fieldId(err.field)}`, message: err.body.message };
}

// errorText is what to show for any failure.
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
