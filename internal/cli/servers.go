package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// clusterServerCommands are the verbs of `polyvisor cluster` about the
// servers themselves: list, remove, join-token (superadmin).
func (a *app) clusterServerCommands() []*cobra.Command {
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the servers: addresses, etcd members, health, and who leads (superadmin)",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			servers, err := c.ListServers(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Server]{Items: nonNil(servers)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "URL", "ETCD MEMBER", "HEALTH", "ROLE", "VERSION")
				for _, sv := range servers {
					row(tw, sv.Name, orDash(sv.URL), memberOf(sv), map[bool]string{true: "up", false: "DOWN"}[sv.Healthy], serverRole(sv), orDash(sv.Version))
				}
			})
		},
	}
	remove := &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Take a server out of the control plane, its etcd member with it (superadmin)",
		Long: "Remove a server: its etcd member leaves the store's cluster (the server\n" +
			"stops), its token ends and it leaves the list. Ask another server: the\n" +
			"one answering cannot remove itself. The last server, and one whose removal\n" +
			"would leave the store without a quorum of members that are up, are refused.\n" +
			"To bring the machine back, join it again from an empty data dir.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.RemoveServer(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "server", Name: args[0], Result: "removed"},
				"Removed server "+args[0]+" and its etcd member; it stops")
		},
	}
	var ttl time.Duration
	token := &cobra.Command{
		Use:   "join-token",
		Short: "Make a single-use token for a new server to join, and print its command (superadmin)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < time.Minute {
				return usagef("--ttl: must be at least 1m")
			}
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateServerJoinToken(cmd.Context(), api.JoinTokenCreate{TTLSeconds: int(ttl / time.Second)})
			if err != nil {
				return err
			}
			server, note := joinServerURL(tok.ServerURL, cfg.Server)
			return a.print(cmd.OutOrStdout(), tok, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Server join token (single use, expires %s; it is not shown again):\n\n  %s\n\n",
					tok.ExpiresAt.Local().Format(time.RFC3339), tok.Token)
				fmt.Fprintf(tw, "Servers' CA fingerprint (SHA-256): %s\n\n", tok.CAFingerprint)
				fmt.Fprintf(tw, "Run on the new server (an empty data dir; its etcd member listens on --peer-listen):\n\n"+
					"  polyvisor server --join %s --join-token %s \\\n    --name NAME --advertise-address ADDRESS --peer-listen :7444\n", server, tok.Token)
				if note != "" {
					fmt.Fprintf(tw, "\n%s\n", note)
				}
			})
		},
	}
	token.Flags().DurationVar(&ttl, "ttl", 30*time.Minute, "how long the token stays valid")
	return []*cobra.Command{list, remove, token}
}

// memberOf is a server's etcd member as the list shows it.
func memberOf(sv api.Server) string {
	if sv.MemberID == "" {
		return "-"
	}
	m := sv.MemberID
	if sv.Learner {
		m += " (learner)"
	}
	return m
}

// serverRole says what a server leads.
func serverRole(sv api.Server) string {
	var r []string
	if sv.Leader {
		r = append(r, "leader")
	}
	if sv.EtcdLeader {
		r = append(r, "etcd-leader")
	}
	if len(r) == 0 {
		return "follower"
	}
	return strings.Join(r, ",")
}
