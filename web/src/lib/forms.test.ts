import { describe, expect, it } from 'vitest';
import { APIError } from './errors';
import { optionalNumber, placeError } from './forms';

const invalid = (field: string, message = 'is wrong') => new APIError(400, { code: 'invalid', field, message });

describe('placeError', () => {
  it('places an error beside the input of its field', () => {
    expect(placeError(invalid('name'), ['name', 'url'])).toEqual({ field: 'name', testId: 'error-name', message: 'is wrong' });
    expect(placeError(invalid('url', 'cannot be reached'), ['name', 'url'])?.testId).toBe('error-url');
  });
  it('finds the input of a nested field, the longest match first', () => {
    expect(placeError(invalid('quota.vcpus'), ['quota', 'quota.vcpus'])).toMatchObject({ field: 'quota.vcpus', testId: 'error-quota-vcpus' });
    expect(placeError(invalid('quota.vms'), ['quota', 'quota.vcpus'])).toMatchObject({ field: 'quota', testId: 'error-quota-vms' });
    expect(placeError(invalid('labels[0].key'), ['labels'])).toMatchObject({ field: 'labels', testId: 'error-labels-0-key' });
  });
  it('does not take a field for one whose name it begins with', () => {
    expect(placeError(invalid('username'), ['user'])).toBeUndefined();
  });
  it('leaves errors without a field, or of another form, to the general box', () => {
    expect(placeError(new APIError(409, { code: 'conflict', message: 'exists' }), ['name'])).toBeUndefined();
    expect(placeError(invalid('kind'), ['name'])).toBeUndefined();
    expect(placeError(new Error('network'), ['name'])).toBeUndefined();
  });
});

describe('optionalNumber', () => {
  it('reads blank as no value', () => {
    expect(optionalNumber('')).toBeUndefined();
    expect(optionalNumber('  ')).toBeUndefined();
    expect(optionalNumber('0')).toBe(0);
    expect(optionalNumber(' 12 ')).toBe(12);
    expect(optionalNumber('x')).toBeUndefined();
  });
});
