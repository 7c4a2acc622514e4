// Small shared pieces: the confirmation dialog, capacity bars, badges.
import { useEffect, useRef, type ReactNode } from 'react';

export function Confirm(props: { title: string; body: ReactNode; onOK(): void; onCancel(): void; danger?: boolean }) {
  const ok = useRef<HTMLButtonElement>(null);
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    ok.current?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') props.onCancel();
      if (e.key === 'Tab' && box.current) {
        const f = box.current.querySelectorAll<HTMLElement>('button');
        const first = f[0];
        const last = f[f.length - 1];
        if (e.shiftKey && document.activeElement === first) {
          last.focus();
          e.preventDefault();
        } else if (!e.shiftKey && document.activeElement === last) {
          first.focus();
          e.preventDefault();
        }
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [props]);
  return (
    <div className="backdrop">
      <div className="dialog" role="dialog" aria-modal="true" aria-labelledby="dlg-title" ref={box}>
        <h2 id="dlg-title">{props.title}</h2>
        <div>{props.body}</div>
        <div className="row end">
          <button data-testid="confirm-cancel" onClick={props.onCancel}>
            Cancel
          </button>
          <button data-testid="confirm-ok" ref={ok} className={props.danger ? 'danger' : 'primary'} onClick={props.onOK}>
            {props.title}
          </button>
        </div>
      </div>
    </div>
  );
}

export function Bar(props: { label: string; used: number; total: number; unit: string }) {
  const pct = props.total > 0 ? Math.min(100, Math.round((props.used / props.total) * 100)) : 0;
  return (
    <div className="bar" title={`${props.label}: ${props.used} of ${props.total} ${props.unit}`}>
      <div className="bar-label">
        <span>{props.label}</span>
        <span>
          {props.used} / {props.total} {props.unit}
        </span>
      </div>
      <div className="bar-track" role="progressbar" aria-label={props.label} aria-valuenow={pct} aria-valuemin={0} aria-valuemax={100}>
        <div className={'bar-fill' + (pct > 90 ? ' hot' : '')} style={{ width: `${pct}%` }} />
      </div>
    </div>
  );
}

export function State({ s }: { s: string }) {
  return <span className={`state state-${s}`}>{s}</span>;
}

export function ErrorBox({ err }: { err: unknown }) {
  if (!err) return null;
  return (
    <div className="error" role="alert">
      {err instanceof Error ? err.message : String(err)}
    </div>
  );
}

export function ago(iso?: string): string {
  if (!iso) return '';
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(iso).toLocaleString();
}
