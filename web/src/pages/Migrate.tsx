// The VM page's migration: a dialog with a host picker that starts
// vm.migrate (POST /v1/vms/{name}/migrate), and the migration's progress.
import { useState } from 'react';
import { migrateVM, type Operation, type VM } from '../api';
import { useHosts } from '../hosts';
import { Dialog, ErrorBox } from '../ui';
import { migrationTargets, migrationText } from '../lib/migrate';

export function MigrateDialog({ vm, onStarted, onClose }: { vm: VM; onStarted(op: Operation): void; onClose(): void }) {
  const hosts = useHosts();
  const [target, setTarget] = useState('');
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<unknown>();
  const targets = migrationTargets(vm, hosts.items);
  const chosen = targets.find((t) => t.name === target);
  const submit = async () => {
    setErr(undefined);
    setBusy(true);
    try {
      onStarted(await migrateVM(vm.project ?? '', vm.name, target));
    } catch (e) {
      setErr(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title={`Migrate ${vm.name}`} onClose={onClose} initialFocus='[data-testid="migrate-host"]'>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <p>
          {vm.name} keeps running while its memory and disks move from {vm.spec.host} to the host you pick; it pauses
          briefly at the switchover. Cancelling the operation while it runs leaves it on {vm.spec.host}.
        </p>
        <label>
          Target host
          <select value={target} onChange={(e) => setTarget(e.target.value)} data-testid="migrate-host" disabled={busy}>
            <option value="">The scheduler's choice</option>
            {targets.map((t) => (
              <option key={t.name} value={t.name} disabled={!!t.why}>
                {t.why ? `${t.name} (${t.why})` : t.name}
              </option>
            ))}
          </select>
        </label>
        {hosts.loaded && targets.every((t) => t.why) && (
          <p className="muted small" data-testid="migrate-no-target">
            No other host can take {vm.name} now; the API will say why if you ask anyway.
          </p>
        )}
        <ErrorBox err={err ?? hosts.error} testId="migrate-error" />
        <div className="row end">
          <button type="button" data-testid="migrate-cancel" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" data-testid="migrate-ok" disabled={busy || !!chosen?.why}>
            {busy ? 'Migrating…' : 'Migrate'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

// MigrationLine shows a migration under way (spec.migration) and how it
// goes (status.migration), or why the last one failed.
export function MigrationLine({ vm }: { vm: VM }) {
  const m = vm.spec.migration;
  const st = vm.status.migration;
  if (!m && st?.phase !== 'failed') return null;
  const current = st && (!m || st.operation === m.operation) ? st : undefined;
  return (
    <p className="notice" role="status" data-testid="vm-migration">
      {m ? `Migrating to ${m.target}` : 'Last migration'}
      {current ? `: ${migrationText(current)}` : m ? ': starting' : ''}
    </p>
  );
}
