// Sizes as people read them.
export function mib(n: number): string {
  if (!Number.isFinite(n)) return '';
  if (Math.abs(n) < 1024) return `${Math.round(n)} MiB`;
  const g = n / 1024;
  return `${g < 100 ? g.toFixed(1).replace(/\.0$/, '') : Math.round(g)} GiB`;
}

// bytes shows a byte count in binary units.
export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1).replace(/\.0$/, '') : Math.round(v)} ${units[i]}`;
}

// duration shows seconds as the largest whole unit ("1 day", "90 minutes").
export function duration(s: number): string {
  const units: [number, string][] = [
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [n, u] of units) if (s >= n && s % n === 0) return `${s / n} ${u}${s / n === 1 ? '' : 's'}`;
  return `${s} seconds`;
}
