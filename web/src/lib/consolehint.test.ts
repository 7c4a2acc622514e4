import { describe, expect, it } from 'vitest';
import { serialConsoles, serialHint, type ConsoleVM } from './consolehint';

const vm = (cmdline?: string, console?: { serial?: string; vnc?: string }, powerState = 'running'): ConsoleVM => ({
  spec: { boot: cmdline === undefined ? undefined : { kernel: 'k', cmdline } },
  status: { powerState, console },
});

describe('serialConsoles', () => {
  it('finds the serial consoles of a command line', () => {
    expect(serialConsoles('console=ttyS0 quiet')).toEqual(['ttyS0']);
    expect(serialConsoles('root=/dev/vda console=tty0 console=ttyS1,115200n8')).toEqual(['ttyS1']);
    expect(serialConsoles('console=hvc0')).toEqual(['hvc0']);
  });
  it('ignores the screen and look-alikes', () => {
    expect(serialConsoles('console=tty0')).toEqual([]);
    expect(serialConsoles('xconsole=ttyS0 earlyconsole=ttyS0')).toEqual([]);
    expect(serialConsoles(undefined)).toEqual([]);
  });
});

describe('serialHint', () => {
  it('points a serial-console kernel to the Serial tab', () => {
    expect(serialHint(vm('console=ttyS0 quiet', { serial: '/s', vnc: '/v' }))).toMatch(/console=ttyS0.*Serial tab/);
  });
  it('points a VM without a screen to the Serial tab', () => {
    expect(serialHint(vm(undefined, { serial: '/s' }))).toMatch(/no graphical screen.*Serial tab/);
  });
  it('says nothing of a VM whose screen shows its console', () => {
    expect(serialHint(vm('root=/dev/vda console=tty0', { serial: '/s', vnc: '/v' }))).toBeUndefined();
    expect(serialHint(vm(undefined, { serial: '/s', vnc: '/v' }))).toBeUndefined();
    expect(serialHint(vm(undefined, undefined, 'stopped'))).toBeUndefined();
  });
});
