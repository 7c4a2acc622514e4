package daemon

import (
	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/internal/agent"
)

// usageInterval is how often an agent (the built-in one too) samples its
// VMs into the host's usage history.
var usageInterval = agent.DefaultUsageInterval

// addUsageFlag registers --usage-interval on a command that runs an agent.
func addUsageFlag(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&usageInterval, "usage-interval", agent.DefaultUsageInterval, "how often to sample the VMs' CPU and memory into the host's usage history (<data-dir>/usage); negative keeps none")
}
