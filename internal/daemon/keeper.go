package daemon

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/internal/keeper"
)

// KeeperCommand returns `polyvisor keeper`, the host's HA watchdog.
func KeeperCommand() *cobra.Command {
	var (
		dataDir string
		logs    logFlags
	)
	cmd := &cobra.Command{
		Use:   "keeper",
		Short: "Run the HA watchdog an agent feeds (started by the agent)",
		Long: `Run the keeper of an agent's data directory: a process apart from the agent
that the agent feeds with every heartbeat the server answers and with the
processes of its HA VMs. When it is not fed for T_fence (the agent dead, hung
or cut off from the control plane) it kills those processes, so that the
control plane may restart them elsewhere (docs/HA.md). The agent starts one
when none runs; it may also run as a service of its own. It exits once no
agent has fed it for a while and it holds no process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger()
			if err != nil {
				return err
			}
			if fi, err := os.Stat(dataDir); err != nil {
				return fmt.Errorf("--data-dir: %w", err)
			} else if !fi.IsDir() {
				return fmt.Errorf("--data-dir: %s is not a directory", dataDir)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return keeper.Run(ctx, keeper.Config{Dir: dataDir, Logger: log.With("component", "keeper")})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", DefaultAgentDir, "the agent's data directory (the keeper's socket and record go there)")
	logs.register(cmd)
	return cmd
}
