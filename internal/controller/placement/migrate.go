package placement

import (
	"context"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Migrate picks the host a running VM migrates to: target when given,
// else the scheduler's choice among Polyvisor's own hosts but the VM's
// own. Cordoned, not ready and full hosts are refused (422) as for a
// create. It returns the host and the conditions the migration's
// operation must carry in its transaction (the host's admission record and
// version), so the VM's room on the target is admitted exactly as a
// create's.
func (p *Placer) Migrate(ctx context.Context, vm *api.VM, target string) (string, []store.Op, error) {
	source := vm.Spec.Host
	filter := func(h *api.Host) bool { return OwnHosts(h) && h.Name != source }
	host, conds, release, err := p.Place(ctx, scheduler.Request{VCPUs: vm.Spec.VCPUs, MemoryMiB: vm.Spec.MemoryMiB, Host: target}, filter)
	if release != nil {
		release() // a migration's room is held by its operation's record
	}
	return host, conds, err
}
