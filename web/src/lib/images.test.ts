import { describe, expect, it } from 'vitest';
import { imageKey, kindFromFile, nameFromFile, owner, visibleImages, type ImageLike } from './images';

const img = (project: string, name: string, pub = false, kind = 'disk'): ImageLike => ({ project, name, kind, state: 'ready', public: pub });

describe('visibleImages', () => {
  const list = [img('default', 'debian', true), img('shop', 'web'), img('other', 'secret'), img('shop', 'k', false, 'kernel'), img('other', 'alpine', true)];
  it("shows a project its own images first, then the public ones, never another project's private ones", () => {
    expect(visibleImages(list, 'shop').map(imageKey)).toEqual(['shop/web', 'shop/k', 'other/alpine', 'default/debian']);
  });
  it('marks how each image relates to the project', () => {
    expect(owner(list[0], 'shop')).toBe('public');
    expect(owner(list[1], 'shop')).toBe('own');
    expect(owner(list[2], 'shop')).toBe('other');
    expect(owner(list[0], 'default')).toBe('own');
  });
  it('searches names and projects', () => {
    expect(visibleImages(list, 'shop', 'DEB').map(imageKey)).toEqual(['default/debian']);
    expect(visibleImages(list, 'shop', 'other').map(imageKey)).toEqual(['other/alpine']);
  });
});

describe('from a file name', () => {
  it('proposes a valid image name', () => {
    expect(nameFromFile('C:\\Downloads\\Debian-12_Cloud.qcow2')).toBe('debian-12-cloud');
    expect(nameFromFile('/tmp/disk.img')).toBe('disk');
    expect(nameFromFile('___.raw')).toBe('');
    expect(nameFromFile('a'.repeat(80) + '.img')).toHaveLength(63);
  });
  it('guesses the kind', () => {
    expect(kindFromFile('vmlinuz-6.1')).toBe('kernel');
    expect(kindFromFile('initrd.img-6.1')).toBe('initrd');
    expect(kindFromFile('debian.qcow2')).toBe('disk');
  });
});
