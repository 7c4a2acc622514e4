// Command polyvisor is Polyvisor's one binary: the control plane
// (`polyvisor server`), the host agent (`polyvisor agent`) and the CLI.
package main

import (
	"context"
	"os"

	"github.com/polyvisor/polyvisor/internal/bench"
	"github.com/polyvisor/polyvisor/internal/cli"
	"github.com/polyvisor/polyvisor/internal/daemon"
)

func main() {
	os.Exit(cli.Execute(context.Background(), daemon.ServerCommand(), daemon.AgentCommand(), daemon.KeeperCommand(), bench.Command()))
}
