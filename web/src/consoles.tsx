// The VM's screen through noVNC and its serial line through xterm.js, both
// over the server's console websocket (the token as a subprotocol).
import { useEffect, useRef, useState } from 'react';
import RFB from '@novnc/novnc';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { getToken } from './api';
import { wsProtocols, wsURL } from './lib/wsproto';

function consolePath(project: string, name: string, type: string): string {
  return `/v1/vms/${encodeURIComponent(name)}/console?type=${type}&project=${encodeURIComponent(project)}`;
}

export function VNCConsole({ project, name }: { project: string; name: string }) {
  const el = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [status, setStatus] = useState('connecting');
  useEffect(() => {
    if (!el.current) return;
    const r = new RFB(el.current, wsURL(location, consolePath(project, name, 'vnc')), { wsProtocols: wsProtocols(getToken()) });
    r.scaleViewport = true;
    r.addEventListener('connect', () => setStatus('connected'));
    r.addEventListener('disconnect', () => setStatus('disconnected'));
    rfb.current = r;
    return () => {
      r.disconnect();
      rfb.current = null;
    };
  }, [project, name]);
  return (
    <div>
      <div className="row">
        <span>
          Screen: <strong data-testid="vnc-status">{status}</strong>
        </span>
        <button onClick={() => rfb.current?.sendCtrlAltDel()} disabled={status !== 'connected'}>
          Send Ctrl-Alt-Del
        </button>
      </div>
      <div className="vnc" data-testid="vnc-screen" ref={el} />
    </div>
  );
}

export function SerialConsole({ project, name }: { project: string; name: string }) {
  const el = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('connecting');
  useEffect(() => {
    if (!el.current) return;
    const term = new Terminal({ convertEol: true, fontSize: 13, scrollback: 5000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el.current);
    fit.fit();
    let ws: WebSocket | undefined;
    let closed = false;
    const enc = new TextEncoder();
    const sub = term.onData((d) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    const connect = () => {
      if (closed) return;
      ws = new WebSocket(wsURL(location, consolePath(project, name, 'serial')), wsProtocols(getToken()));
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        setStatus('connected');
        term.focus();
      };
      ws.onclose = () => setStatus('disconnected');
      ws.onmessage = (m) => term.write(new Uint8Array(m.data as ArrayBuffer));
    };
    // First what the guest wrote before the tab opened, then the live line.
    fetch(`/v1/vms/${encodeURIComponent(name)}/console/log?bytes=16384&project=${encodeURIComponent(project)}`, {
      headers: { Authorization: `Bearer ${getToken()}` },
    })
      .then((r) => (r.ok ? r.text() : ''))
      .then((text) => {
        if (!closed && text) term.write(text);
      })
      .catch(() => {})
      .finally(connect);
    const onResize = () => fit.fit();
    window.addEventListener('resize', onResize);
    return () => {
      closed = true;
      window.removeEventListener('resize', onResize);
      sub.dispose();
      ws?.close();
      term.dispose();
    };
  }, [project, name]);
  return (
    <div>
      <p>
        Serial line: <strong>{status}</strong>
      </p>
      <div className="serial" data-testid="serial-terminal" ref={el} />
    </div>
  );
}
