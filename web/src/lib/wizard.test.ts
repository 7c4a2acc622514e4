import { describe, expect, it } from 'vitest';
import { APIError } from './errors';
import { createBody, emptyWizard, imageRef, nicField, parseLabels } from './wizard';

describe('create body', () => {
  it('makes the test guest: kernel, initrd, disk and command line', () => {
    const body = createBody({ ...emptyWizard, name: ' web-1 ', image: 'guest-disk', vcpus: '2', memory: '256', kernel: 'guest-kernel', initrd: 'guest-initrd', cmdline: 'console=ttyS0 quiet' });
    expect(body).toEqual({
      name: 'web-1',
      vcpus: 2,
      memoryMiB: 256,
      nics: [{ network: 'user' }],
      powerState: 'running',
      disks: [{ name: 'root', image: 'guest-disk' }],
      boot: { kernel: 'guest-kernel', initrd: 'guest-initrd', cmdline: 'console=ttyS0 quiet' },
    });
  });
  it('leaves out what was not given, and lets the API judge bad numbers', () => {
    const body = createBody({ ...emptyWizard, vcpus: '', memory: 'lots', start: false });
    expect(body).toEqual({ name: '', vcpus: 0, memoryMiB: 0, nics: [{ network: 'user' }], powerState: 'stopped' });
  });
  it('asks for EFI firmware only when chosen: BIOS is the default', () => {
    expect(createBody({ ...emptyWizard, image: 'd', firmware: 'efi' }).boot).toEqual({ firmware: 'efi' });
    expect(createBody({ ...emptyWizard, image: 'd', firmware: 'bios' }).boot).toBeUndefined();
    expect(createBody({ ...emptyWizard, kernel: 'k', firmware: 'efi' }).boot).toEqual({ kernel: 'k', firmware: 'efi' });
  });
  it('sends an initrd without a kernel, for the API to name', () => {
    expect(createBody({ ...emptyWizard, initrd: 'i' }).boot).toEqual({ initrd: 'i' });
  });
  it('adds cloud-init, placement, labels and a lease', () => {
    const body = createBody({ ...emptyWizard, userData: '#cloud-config\n', host: 'h1', labels: 'app=web, tier = front\nflag', leaseHours: '1.5' });
    expect(body.cloudInit).toEqual({ userData: '#cloud-config\n' });
    expect(body.host).toBe('h1');
    expect(body.labels).toEqual({ app: 'web', tier: 'front', flag: '' });
    expect(body.leaseSeconds).toBe(5400);
  });
});

describe('labels and images', () => {
  it('parses k=v lists', () => {
    expect(parseLabels('')).toEqual({});
    expect(parseLabels('a=1,b=x=y')).toEqual({ a: '1', b: 'x=y' });
  });
  it('names images as the VM project sees them', () => {
    expect(imageRef({ name: 'disk', project: 'shop' }, 'shop')).toBe('disk');
    expect(imageRef({ name: 'ubuntu', project: 'default' }, 'shop')).toBe('default/ubuntu');
  });
});

describe('nics', () => {
  it('sends an address and a group only on a network', () => {
    const body = createBody({ ...emptyWizard, nics: [{ network: 'web', ip: ' 10.0.0.5 ', secgroup: 'web' }, { network: 'user', ip: '10.0.0.6', secgroup: 'x' }] });
    expect(body.nics).toEqual([{ network: 'web', ip: '10.0.0.5', securityGroups: ['web'] }, { network: 'user' }]);
  });
  it('leaves out what the server chooses', () => {
    expect(createBody({ ...emptyWizard, nics: [{ network: 'web', ip: '', secgroup: '' }] }).nics).toEqual([{ network: 'web' }]);
  });
});

describe('nic field', () => {
  it('names a refused NIC field as the add-a-NIC form does', () => {
    const e = nicField(new APIError(400, { code: 'invalid', message: 'ip 10.77.0.300: not an address', field: 'nics[1].ip' })) as APIError;
    expect(e.field).toBe('ip');
    expect(e.message).toBe('ip 10.77.0.300: not an address');
    const whole = new APIError(400, { code: 'invalid', message: 'too many', field: 'nics' });
    expect(nicField(whole)).toBe(whole);
    const other = new Error('network down');
    expect(nicField(other)).toBe(other);
  });

  it('makes the root disk a volume: made from the image in a pool, or an existing one', () => {
    const made = createBody({ ...emptyWizard, name: 'w', image: 'img', rootDisk: 'pool', rootPool: 'nfs', deleteRootVolume: true });
    expect(made.disks).toEqual([{ name: 'root', image: 'img' }]);
    expect(made.rootPool).toBe('nfs');
    expect(made.deleteRootVolume).toBe(true);
    const kept = createBody({ ...emptyWizard, name: 'w', image: 'img', rootDisk: 'pool', rootPool: 'nfs' });
    expect(kept.deleteRootVolume).toBeUndefined();
    const existing = createBody({ ...emptyWizard, name: 'w', image: 'img', rootDisk: 'volume', rootVolume: 'boot1', rootPool: 'nfs', deleteRootVolume: true });
    expect(existing.rootVolume).toBe('boot1');
    expect(existing.disks).toBeUndefined();
    expect(existing.rootPool).toBeUndefined();
    expect(existing.deleteRootVolume).toBeUndefined();
    expect(createBody({ ...emptyWizard, image: 'img' }).rootPool).toBeUndefined();
  });
});
