// The VM table renders only the rows in view, so thousands stay smooth.
import { memo, useEffect, useRef, useState } from 'react';
import type { VM } from '../api';
import { Link, navigate } from '../router';
import { State } from '../ui';
import { providerOf, vmPath } from '../lib/vmfilter';
import { visibleWindow } from '../lib/vwindow';
import { mib } from '../lib/units';

export const rowHeight = 34;

const columns: [string, string][] = [
  ['name', 'Name'],
  ['project', 'Project'],
  ['state', 'State'],
  ['host', 'Host'],
  ['provider', 'Provider'],
  ['vcpus', 'vCPUs'],
  ['memory', 'Memory'],
];

export const VMTable = memo(function VMTable(props: { rows: VM[]; sort: string; showProject: boolean; onSort(col: string): void }) {
  const box = useRef<HTMLDivElement>(null);
  const [scroll, setScroll] = useState(0);
  const [height, setHeight] = useState(600);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    setHeight(el.clientHeight);
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  // A new filter may leave the scroll position past the end.
  useEffect(() => {
    const el = box.current;
    if (el && el.scrollTop > props.rows.length * rowHeight) el.scrollTop = 0;
  }, [props.rows.length]);

  const win = visibleWindow(props.rows.length, rowHeight, scroll, height);
  const cols = columns.filter(([c]) => c !== 'project' || props.showProject);
  const span = cols.length + 1;
  return (
    <div className="scroller" ref={box} onScroll={(e) => setScroll(e.currentTarget.scrollTop)} tabIndex={-1}>
      <table data-testid="vm-table" className="vmtable" aria-rowcount={props.rows.length + 1}>
        <thead>
          <tr>
            {cols.map(([col, label]) => {
              const sorted = props.sort === col ? 'ascending' : props.sort === `-${col}` ? 'descending' : undefined;
              return (
                <th key={col} scope="col" aria-sort={sorted ?? 'none'}>
                  <button type="button" className="link sort" onClick={() => props.onSort(col)}>
                    {label}
                    <span aria-hidden="true">{sorted === 'ascending' ? ' ▲' : sorted === 'descending' ? ' ▼' : ''}</span>
                  </button>
                </th>
              );
            })}
            <th scope="col">IPs</th>
          </tr>
        </thead>
        <tbody>
          {win.padTop > 0 && (
            <tr aria-hidden="true" className="pad">
              <td colSpan={span} style={{ height: win.padTop }} />
            </tr>
          )}
          {props.rows.slice(win.start, win.end).map((vm, i) => {
            const to = vmPath(vm);
            return (
              <tr key={`${vm.project}/${vm.name}`} data-testid={`vm-row-${vm.name}`} aria-rowindex={win.start + i + 2} style={{ height: rowHeight }} onClick={() => navigate(to)}>
                <td>
                  <Link to={to} onClick={(e) => e.stopPropagation()}>
                    {vm.name}
                  </Link>
                </td>
                {props.showProject && <td>{vm.project}</td>}
                <td>
                  <State s={vm.status.powerState} />
                </td>
                <td>{vm.spec.host}</td>
                <td>{providerOf(vm)}</td>
                <td className="num">{vm.spec.vcpus}</td>
                <td className="num">{mib(vm.spec.memoryMiB)}</td>
                <td className="ips">{vm.status.ips?.join(', ')}</td>
              </tr>
            );
          })}
          {win.padBottom > 0 && (
            <tr aria-hidden="true" className="pad">
              <td colSpan={span} style={{ height: win.padBottom }} />
            </tr>
          )}
        </tbody>
      </table>
      {props.rows.length === 0 && <p className="muted empty">No VMs match.</p>}
    </div>
  );
});
