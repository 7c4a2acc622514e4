package ops

import (
	"context"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/provider"
)

// Estate is what the controller asks of the connected estates: what a
// provider's VMs can do, and the operations carried out directly on them
// (snapshots) rather than through their desired state.
type Estate interface {
	Capabilities(provider string) (provider.Capabilities, bool)
	Exec(ctx context.Context, vm *api.VM, kind string, snap api.SnapshotCreate) error
}

// Metrics counts operations as they start and finish.
type Metrics interface {
	OpStarted(kind string)
	OpFinished(kind, status string)
}

type noMetrics struct{}

func (noMetrics) OpStarted(string)          {}
func (noMetrics) OpFinished(string, string) {}
