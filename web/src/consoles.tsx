// The VM's screen through noVNC and its serial line through xterm.js, both
// over the server's console websocket (the token as a subprotocol).
import { useEffect, useRef, useState } from 'react';
import RFB from '@novnc/novnc';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { getToken } from './api';
import { consolePath, wsProtocols, wsURL } from './lib/wsproto';

type Status = 'connecting' | 'connected' | 'disconnected';

// The serial terminal's element offers the terminal's text, as xterm.js
// holds it (its buffer, scrollback included), for tools that read the
// page: its DOM holds only the rows in view, beside xterm's stylesheet.
export interface TerminalElement extends HTMLDivElement {
  terminalText?: () => string;
}

function VNCConsole({ project, name }: { project: string; name: string }) {
  const el = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [why, setWhy] = useState('');
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    if (!el.current) return;
    setStatus('connecting');
    setWhy('');
    let r: RFB;
    try {
      r = new RFB(el.current, wsURL(location, consolePath(project, name, 'vnc')), { wsProtocols: wsProtocols(getToken()) });
    } catch (e) {
      setStatus('disconnected');
      setWhy(String(e));
      return;
    }
    r.scaleViewport = true;
    r.background = 'transparent';
    r.addEventListener('connect', () => setStatus('connected'));
    r.addEventListener('disconnect', (e) => {
      setStatus('disconnected');
      if (!(e as CustomEvent<{ clean: boolean }>).detail?.clean) setWhy('the connection was lost or refused (is the VM running?)');
    });
    r.addEventListener('securityfailure', (e) => setWhy((e as CustomEvent<{ reason?: string }>).detail?.reason ?? 'security failure'));
    rfb.current = r;
    return () => {
      r.disconnect();
      rfb.current = null;
    };
  }, [project, name, attempt]);
  return (
    <div>
      <div className="row">
        <span role="status">
          Screen: <strong data-testid="vnc-status">{status}</strong>
          {why && <span className="muted"> · {why}</span>}
        </span>
        <div className="spacer" />
        <button type="button" data-testid="vnc-ctrl-alt-del" onClick={() => rfb.current?.sendCtrlAltDel()} disabled={status !== 'connected'}>
          Send Ctrl-Alt-Del
        </button>
        <button type="button" data-testid="vnc-reconnect" onClick={() => setAttempt((n) => n + 1)} disabled={status === 'connecting'}>
          {status === 'connected' ? 'Reconnect' : 'Connect'}
        </button>
      </div>
      <div className="vnc" data-testid="vnc-screen" ref={el} aria-label={`Screen of ${name}`} />
      <p className="muted small">Click the screen to type into it; keys go to the VM until you click elsewhere.</p>
    </div>
  );
}

function SerialConsole({ project, name }: { project: string; name: string }) {
  const el = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    if (!el.current) return;
    setStatus('connecting');
    const dark = document.documentElement.dataset.theme === 'dark';
    const term = new Terminal({
      convertEol: true,
      fontSize: 13,
      scrollback: 5000,
      theme: dark ? { background: '#0b0d10' } : { background: '#111418' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el.current);
    fit.fit();
    const host = el.current as TerminalElement;
    host.terminalText = () => {
      const b = term.buffer.active;
      const lines: string[] = [];
      for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
      return lines.join('\n').replace(/\n+$/, '');
    };
    let ws: WebSocket | undefined;
    let closed = false;
    const enc = new TextEncoder();
    const sub = term.onData((d) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    const sub2 = term.onBinary((d) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff));
    });
    const connect = () => {
      if (closed) return;
      try {
        ws = new WebSocket(wsURL(location, consolePath(project, name, 'serial')), wsProtocols(getToken()));
      } catch {
        setStatus('disconnected');
        return;
      }
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        setStatus('connected');
        term.focus();
      };
      ws.onclose = () => {
        if (!closed) setStatus('disconnected');
      };
      ws.onmessage = (m) => term.write(typeof m.data === 'string' ? m.data : new Uint8Array(m.data as ArrayBuffer));
    };
    // First what the guest wrote before the tab opened, then the live line.
    fetch(`/v1/vms/${encodeURIComponent(name)}/console/log?bytes=16384&project=${encodeURIComponent(project)}`, {
      headers: { Authorization: `Bearer ${getToken()}` },
    })
      .then((r) => (r.ok ? r.arrayBuffer() : undefined))
      .then((buf) => {
        if (!closed && buf && buf.byteLength) term.write(new Uint8Array(buf));
      })
      .catch(() => {})
      .finally(connect);
    const ro = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        // not laid out yet
      }
    });
    ro.observe(el.current);
    return () => {
      closed = true;
      delete host.terminalText;
      ro.disconnect();
      sub.dispose();
      sub2.dispose();
      ws?.close();
      term.dispose();
    };
  }, [project, name, attempt]);
  return (
    <div>
      <div className="row">
        <span role="status">
          Serial line: <strong data-testid="serial-status">{status}</strong>
        </span>
        <div className="spacer" />
        <button type="button" data-testid="serial-reconnect" onClick={() => setAttempt((n) => n + 1)} disabled={status === 'connecting'}>
          {status === 'connected' ? 'Reconnect' : 'Connect'}
        </button>
      </div>
      <div className="serial" data-testid="serial-terminal" ref={el} aria-label={`Serial console of ${name}`} />
    </div>
  );
}

export default function Consoles({ kind, project, name }: { kind: 'vnc' | 'serial'; project: string; name: string }) {
  return kind === 'vnc' ? <VNCConsole project={project} name={name} /> : <SerialConsole project={project} name={name} />;
}
