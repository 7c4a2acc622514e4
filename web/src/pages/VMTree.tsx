// The inventory on the side of the VM list: provider (or Polyvisor's own
// hosts), then datacenter/cluster for a provider, then host, then VMs.
import { memo, useMemo } from 'react';
import type { VM } from '../api';
import { Link } from '../router';
import { inventory, vmPath } from '../lib/vmfilter';

const perHost = 50;

export const VMTree = memo(function VMTree(props: { vms: VM[]; provider: string; host: string; onPick(provider: string, host: string): void }) {
  const tree = useMemo(() => inventory(props.vms), [props.vms]);
  const current = (p: string, h: string) => props.provider === p && props.host === h;
  return (
    <nav className="tree card" aria-label="Inventory">
      <h2>Inventory</h2>
      <button type="button" className="link" aria-current={current('', '') ? 'true' : undefined} onClick={() => props.onPick('', '')}>
        Everything ({props.vms.length})
      </button>
      <ul>
        {[...tree.entries()].map(([p, places]) => (
          <li key={p}>
            <details open>
              <summary>
                <button type="button" className="link" aria-current={current(p, '') ? 'true' : undefined} onClick={() => props.onPick(p, '')}>
                  {p === 'polyvisor' ? 'Polyvisor hosts' : `Provider ${p}`}
                </button>
              </summary>
              {[...places.entries()].map(([place, hosts]) => (
                <ul key={place}>
                  {place && <li className="muted place">{place}</li>}
                  {[...hosts.entries()].map(([h, vms]) => (
                    <li key={h} className={place ? 'nested' : ''}>
                      <details>
                        <summary>
                          <button type="button" className="link" aria-current={current(p, h) ? 'true' : undefined} onClick={() => props.onPick(p, h === '(unplaced)' ? '' : h)}>
                            {h}
                          </button>{' '}
                          <span className="muted">({vms.length})</span>
                        </summary>
                        <ul>
                          {vms.slice(0, perHost).map((vm) => (
                            <li key={`${vm.project}/${vm.name}`}>
                              <Link to={vmPath(vm)}>{vm.name}</Link>
                            </li>
                          ))}
                          {vms.length > perHost && <li className="muted">and {vms.length - perHost} more</li>}
                        </ul>
                      </details>
                    </li>
                  ))}
                </ul>
              ))}
            </details>
          </li>
        ))}
      </ul>
    </nav>
  );
});
