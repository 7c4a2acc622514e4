package daemon

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/polyvisor/polyvisor/internal/netplane"
)

// newDataplane opens the host's network dataplane for the agent, or
// returns nil (with a warning) where it cannot be made: its VMs then have
// user-mode NICs only.
func newDataplane(stateDir string, logger *slog.Logger) *netplane.Plane {
	log := logger.With("component", "netplane")
	if os.Geteuid() != 0 {
		log.Warn("this agent makes no networks: the dataplane (bridges, taps, nftables) needs root")
		return nil
	}
	p, err := netplane.New(netplane.Config{StateDir: filepath.Join(stateDir, "net"), Logger: log})
	if err != nil {
		log.Warn("this agent makes no networks", "err", err)
		return nil
	}
	return p
}
