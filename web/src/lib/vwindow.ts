// Which rows of a long list to render: those in view plus an overscan.
export interface Window {
  start: number; // first row rendered
  end: number; // one past the last row rendered
  padTop: number; // px above the first rendered row
  padBottom: number; // px below the last rendered row
}

export function visibleWindow(total: number, rowHeight: number, scrollTop: number, viewport: number, overscan = 10): Window {
  if (total <= 0 || rowHeight <= 0) return { start: 0, end: 0, padTop: 0, padBottom: 0 };
  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan);
  const last = Math.min(total, Math.ceil((scrollTop + viewport) / rowHeight) + overscan);
  const start = Math.min(first, total);
  const end = Math.max(start, last);
  return { start, end, padTop: start * rowHeight, padBottom: (total - end) * rowHeight };
}
