// Sizes as people read them.
export function mib(n: number): string {
  if (!Number.isFinite(n)) return '';
  if (Math.abs(n) < 1024) return `${Math.round(n)} MiB`;
  const g = n / 1024;
  return `${g < 100 ? g.toFixed(1).replace(/\.0$/, '') : Math.round(g)} GiB`;
}
