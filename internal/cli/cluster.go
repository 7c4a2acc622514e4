package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) clusterCommand() *cobra.Command {
	cmd := group("cluster", "See the servers of the control plane and which one leads; add and remove servers")
	cmd.AddCommand(a.clusterServerCommands()...)
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show which server leads the controllers (superadmin)",
		Long: `Show which server leads the controllers: the servers sharing one store elect
one, whose controllers act (operations, host liveness, leases, connected
estates). Every write of the leader's controllers carries its term, and is
refused once another term began. With one server, it leads.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			st, err := c.ClusterStatus(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) { printCluster(tw, st) })
		},
	})
	return cmd
}

func printCluster(tw *tabwriter.Writer, st *api.ClusterStatus) {
	if st.Leader == nil {
		row(tw, "Leader:", "none (an election is under way)")
	} else {
		l := st.Leader
		row(tw, "Leader:", l.Name)
		row(tw, "URL:", orDash(l.URL))
		since := "-"
		if !l.LeaderSince.IsZero() {
			since = fmt.Sprintf("%s (%s)", l.LeaderSince.Local().Format(time.DateTime), time.Since(l.LeaderSince).Round(time.Second))
		}
		row(tw, "Since:", since)
		row(tw, "Term:", l.Term)
	}
	answered := st.Self.Name
	if st.Self.Leader {
		answered += " (the leader)"
	}
	row(tw, "Answered by:", answered)
}
