package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// hostAdminCommands are the verbs that take a host out of service
// (superadmin).
func (a *app) hostAdminCommands() []*cobra.Command {
	cordon := func(use, short, result string, on bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  exactArgs(1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, _, err := a.client()
				if err != nil {
					return err
				}
				call := c.UncordonHost
				if on {
					call = c.CordonHost
				}
				h, err := call(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				msg := fmt.Sprintf("Host %s is schedulable again", h.Name)
				if on {
					msg = fmt.Sprintf("Cordoned host %s: no new VM is placed on it; the %d VM(s) it runs keep running", h.Name, h.Status.Allocated.VMs)
				}
				return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "host", Name: h.Name, Result: result}, msg)
			},
		}
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "End a host's credentials at once; its agent must join again (superadmin)",
		Long: "Revoke a host: its token stops working at once, its agent's watch and\n" +
			"console streams end, and the host is marked not ready (its VMs unknown).\n" +
			"The VMs keep running on the host. To bring the host back, make a join token\n" +
			"(polyvisor host join-token), remove the agent's credentials.json from its\n" +
			"data dir on the host, and start the agent with the new --join-token.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			h, err := c.RevokeHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "host", Name: h.Name, Result: "revoked"},
				fmt.Sprintf("Revoked the credentials of host %s; its agent must join again with a new join token", h.Name))
		},
	}
	del := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a host that runs no VM, and its credentials (superadmin)",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteHost(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "host", Name: args[0], Result: "deleted"}, "Deleted host "+args[0])
		},
	}
	return []*cobra.Command{
		cordon("cordon", "Place no new VM on a host; its VMs keep running (superadmin)", "cordoned", true),
		cordon("uncordon", "Make a cordoned host schedulable again (superadmin)", "uncordoned", false),
		revoke, del,
	}
}
