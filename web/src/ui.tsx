// Small shared pieces: dialogs, tabs, capacity bars, badges, errors.
import { useEffect, useRef, type KeyboardEvent as ReactKeyboardEvent, type ReactNode } from 'react';
import { errorText } from './lib/errors';
import { capacityNote, type Use } from './lib/capacity';

const focusable = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

// Dialog is modal: focus moves in and stays in, Escape closes it, and
// focus returns to where it was when it closes.
export function Dialog(props: { title: string; onClose(): void; children: ReactNode; initialFocus?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const onClose = useRef(props.onClose);
  onClose.current = props.onClose;
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const el = box.current;
    const first = (props.initialFocus && el?.querySelector<HTMLElement>(props.initialFocus)) || el?.querySelector<HTMLElement>(focusable);
    first?.focus();
    return () => before?.focus?.();
    // Only when it opens.
  }, []);
  const onKey = (e: ReactKeyboardEvent) => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      onClose.current();
      return;
    }
    if (e.key !== 'Tab' || !box.current) return;
    const items = [...box.current.querySelectorAll<HTMLElement>(focusable)];
    if (items.length === 0) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (e.shiftKey && (document.activeElement === first || !box.current.contains(document.activeElement))) {
      last.focus();
      e.preventDefault();
    } else if (!e.shiftKey && document.activeElement === last) {
      first.focus();
      e.preventDefault();
    }
  };
  return (
    <div className="backdrop" onMouseDown={(e) => e.target === e.currentTarget && onClose.current()}>
      <div className="dialog" role="dialog" aria-modal="true" aria-labelledby="dlg-title" ref={box} onKeyDown={onKey}>
        <h2 id="dlg-title">{props.title}</h2>
        {props.children}
      </div>
    </div>
  );
}

export function Confirm(props: { title: string; body: ReactNode; okLabel?: string; onOK(): void; onCancel(): void; danger?: boolean }) {
  return (
    <Dialog title={props.title} onClose={props.onCancel} initialFocus={props.danger ? '[data-testid="confirm-cancel"]' : '[data-testid="confirm-ok"]'}>
      <div>{props.body}</div>
      <div className="row end">
        <button type="button" data-testid="confirm-cancel" onClick={props.onCancel}>
          Cancel
        </button>
        <button type="button" data-testid="confirm-ok" className={props.danger ? 'danger' : 'primary'} onClick={props.onOK}>
          {props.okLabel ?? props.title}
        </button>
      </div>
    </Dialog>
  );
}

// Tabs is a tab list that also moves with the arrow keys, Home and End.
export function Tabs(props: { tabs: [string, string][]; current: string; onSelect(id: string): void; label: string }) {
  const ids = props.tabs.map(([id]) => id);
  const onKey = (e: ReactKeyboardEvent) => {
    const i = ids.indexOf(props.current);
    let j = -1;
    if (e.key === 'ArrowRight') j = (i + 1) % ids.length;
    else if (e.key === 'ArrowLeft') j = (i - 1 + ids.length) % ids.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = ids.length - 1;
    if (j < 0) return;
    e.preventDefault();
    props.onSelect(ids[j]);
    (e.currentTarget.querySelector(`#tab-${ids[j]}`) as HTMLElement | null)?.focus();
  };
  return (
    <div role="tablist" aria-label={props.label} className="tabs" onKeyDown={onKey}>
      {props.tabs.map(([id, label]) => (
        <button
          key={id}
          id={`tab-${id}`}
          type="button"
          role="tab"
          aria-selected={props.current === id}
          aria-controls={`panel-${id}`}
          tabIndex={props.current === id ? 0 : -1}
          data-testid={`tab-${id}`}
          onClick={() => props.onSelect(id)}
        >
          {label}
        </button>
      ))}
    </div>
  );
}

// CapacityBar shows an allocation against what the scheduler offers
// (allocations may pass it: the bar stops full, the numbers tell), coloured
// by how full that is, with the physical amount and overcommit beside.
export function CapacityBar(props: { label: string; use: Use; fmt?: (n: number) => string; testId?: string; plain?: boolean }) {
  const u = props.use;
  const f = props.fmt ?? String;
  const pct = Number.isFinite(u.percent) ? `${u.percent}%` : 'over';
  const text = `${f(u.used)} of ${f(u.capacity)} (${pct})`;
  const note = props.plain ? '' : capacityNote(u, f);
  return (
    <div className="bar" data-testid={props.testId} data-level={u.level}>
      <div className="bar-label">
        <span>{props.label}</span>
        <span>{text}</span>
      </div>
      <div className="bar-track" role="meter" aria-label={`${props.label} allocated`} aria-valuenow={Math.min(u.used, u.capacity)} aria-valuemin={0} aria-valuemax={u.capacity} aria-valuetext={note ? `${text}, ${note}` : text}>
        <div className={'bar-fill' + (u.level === 'hot' ? ' hot' : u.level === 'warm' ? ' warm' : '')} style={{ width: `${Math.min(100, Number.isFinite(u.percent) ? u.percent : 100)}%` }} />
      </div>
      {note && <div className="bar-note">{note}</div>}
    </div>
  );
}

export function State({ s }: { s: string }) {
  return <span className={`state state-${s || 'unknown'}`}>{s || 'unknown'}</span>;
}

export function ErrorBox({ err, testId }: { err: unknown; testId?: string }) {
  if (!err) return null;
  return (
    <div className="error" role="alert" data-testid={testId}>
      {errorText(err)}
    </div>
  );
}

export function ago(iso?: string, now = Date.now()): string {
  if (!iso) return '';
  const t = Date.parse(iso);
  if (!Number.isFinite(t) || t <= 0) return '';
  const s = Math.round((now - t) / 1000);
  if (s < 0) return 'just now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(t).toLocaleString();
}
