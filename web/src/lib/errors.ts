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
  ) {
    super(body.message);
  }
  get field(): string | undefined {
    return this.body.field;
  }
}

// fieldId turns an API field path ("disks[0].image") into the id of the
// inline error beside its input ("disks-0-image").
export function fieldId(field: string): string {
  return field.replace(/\[(\d+)\]/g, '-$1').replace(/\./g, '-');
}

// The wizard's inputs, by the API field they fill.
const wizardFields: Record<string, string> = {
  name: 'name',
  vcpus: 'vcpus',
  memoryMiB: 'memoryMiB',
  'disks-0-image': 'disks-0-image',
  'disks-0': 'disks-0-image',
  disks: 'disks-0-image',
  'boot-kernel': 'boot-kernel',
  'boot-initrd': 'boot-initrd',
  'boot-cmdline': 'boot-cmdline',
  'cloudInit-userData': 'cloudInit-userData',
  cloudInit: 'cloudInit-userData',
  host: 'host',
  'nics-0-network': 'nics-0-network',
  leaseSeconds: 'leaseSeconds',
};

// formField says which wizard field an error belongs to, or undefined for
// an error shown at the top of the form.
export function formField(err: unknown): string | undefined {
  if (!(err instanceof APIError) || !err.field) return undefined;
  return wizardFields[fieldId(err.field)];
}
