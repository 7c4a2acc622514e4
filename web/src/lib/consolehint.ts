// Why a VM's screen may stay on the firmware's "Booting from ROM": its
// kernel writes its console to a serial line, or it has no screen at all.
export interface ConsoleVM {
  spec: { boot?: { kernel?: string; cmdline?: string } };
  status: { powerState: string; console?: { serial?: string; vnc?: string } };
}

// serialConsoles lists the console= arguments of a kernel command line
// that name a serial port ("ttyS0" of "console=ttyS0,115200n8").
export function serialConsoles(cmdline: string | undefined): string[] {
  const out: string[] = [];
  for (const arg of (cmdline ?? '').split(/\s+/)) {
    const m = /^console=(ttyS\d+|ttyAMA\d+|hvc\d+)(,.*)?$/.exec(arg);
    if (m) out.push(m[1]);
  }
  return out;
}

// serialHint says, when the screen will not show the guest, why, so the
// console can point to the Serial tab; undefined when the screen should.
export function serialHint(vm: ConsoleVM): string | undefined {
  const serial = serialConsoles(vm.spec.boot?.cmdline);
  if (serial.length > 0) {
    return `This VM's kernel writes its console to the serial line (console=${serial[serial.length - 1]} on its command line): the screen shows only the firmware. Its boot messages and login are on the Serial tab.`;
  }
  const c = vm.status.console;
  if (vm.status.powerState === 'running' && c && c.serial && !c.vnc) {
    return 'This VM has no graphical screen; its console is the serial line, on the Serial tab.';
  }
  return undefined;
}
