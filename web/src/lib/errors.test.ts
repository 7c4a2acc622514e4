import { describe, expect, it } from 'vitest';
import { APIError, errorText, fieldError, fieldId, wizardSlot } from './errors';

const invalid = (field?: string, message = 'bad') => new APIError(400, { code: 'invalid', message, field });

describe('fieldId', () => {
  it('turns JSON paths into test-id suffixes', () => {
    expect(fieldId('disks[0].image')).toBe('disks-0-image');
    expect(fieldId('boot.kernel')).toBe('boot-kernel');
    expect(fieldId('cloudInit.userData')).toBe('cloudInit-userData');
    expect(fieldId('nics[12].mac')).toBe('nics-12-mac');
    expect(fieldId('name')).toBe('name');
  });
});

describe('wizardSlot', () => {
  it('places every field the create validation names', () => {
    const want: Record<string, string> = {
      name: 'name',
      vcpus: 'vcpus',
      memoryMiB: 'memoryMiB',
      disks: 'image',
      'disks[0].image': 'image',
      'disks[0].sizeMiB': 'image',
      'disks[0].name': 'image',
      nics: 'network',
      'nics[0].network': 'network',
      'nics[0].mac': 'network',
      'boot.kernel': 'kernel',
      'boot.initrd': 'initrd',
      'boot.cmdline': 'cmdline',
      'boot.firmware': 'firmware',
      'cloudInit.userData': 'userData',
      'labels.app': 'labels',
      host: 'host',
      leaseSeconds: 'lease',
      powerState: 'start',
    };
    for (const [field, slot] of Object.entries(want)) expect(wizardSlot(field), field).toBe(slot);
  });
  it('leaves unknown fields to the general box', () => {
    expect(wizardSlot('stopTimeoutSeconds')).toBeUndefined();
    expect(wizardSlot('body')).toBeUndefined();
    expect(wizardSlot('disksX')).toBeUndefined();
  });
});

describe('fieldError', () => {
  it('names the inline error after the API field, shown at its input', () => {
    expect(fieldError(invalid('name', 'is required'))).toEqual({ slot: 'name', testId: 'error-name', message: 'is required' });
    expect(fieldError(invalid('disks[0].image'))).toMatchObject({ slot: 'image', testId: 'error-disks-0-image' });
    expect(fieldError(invalid('memoryMiB'))).toMatchObject({ slot: 'memoryMiB', testId: 'error-memoryMiB' });
    expect(fieldError(invalid('boot.kernel'))).toMatchObject({ slot: 'kernel', testId: 'error-boot-kernel' });
  });
  it('gives nothing for errors without a known field', () => {
    expect(fieldError(invalid())).toBeUndefined();
    expect(fieldError(invalid('stopTimeoutSeconds'))).toBeUndefined();
    expect(fieldError(new APIError(422, { code: 'unprocessable', message: 'over quota' }))).toBeUndefined();
    expect(fieldError(new Error('network down'))).toBeUndefined();
  });
});

describe('errorText', () => {
  it('says what failed, with the wait of a rate limit', () => {
    expect(errorText(new APIError(429, { code: 'too_many_requests', message: 'slow down' }, 3))).toBe('slow down (try again in 3s)');
    expect(errorText(new APIError(500, { code: 'internal', message: '' }))).toBe('HTTP 500');
    expect(errorText('plain')).toBe('plain');
    expect(invalid('name').code).toBe('invalid');
  });
});
