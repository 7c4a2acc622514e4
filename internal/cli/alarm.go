package cli

import (
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) alarmCommand() *cobra.Command {
	cmd := group("alarm", "See what needs an operator: a full disk, an audit log that cannot write", "alarms")
	cmd.AddCommand(&cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the alarms raised now (superadmin)",
		Long: `List the alarms raised now: audit-full (the audit log is past its size
limit), audit-write (audit records cannot be written), audit-corrupt
(verification found damage), disk-full (the server is read-only until space
is freed), store-quota (likewise, for the store's database quota).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			alarms, err := c.ListAlarms(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Alarm]{Items: nonNil(alarms)}, func(tw *tabwriter.Writer) {
				printAlarms(tw, alarms)
			})
		},
	})
	return cmd
}
