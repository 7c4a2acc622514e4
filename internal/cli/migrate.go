package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) vmMigrateCommand() *cobra.Command {
	var host string
	var noWait bool
	cmd := &cobra.Command{
		Use:   "migrate NAME [--host H]",
		Short: "Move a running VM to another host while it runs",
		Long: "Migrate a running VM live: its local disks are mirrored to the target by QEMU,\n" +
			"then its memory moves; the guest goes on where it was. Without --host the\n" +
			"scheduler picks a host (never the VM's own, never a cordoned one). It waits for\n" +
			"the migration to end unless --no-wait; `polyvisor op cancel ID` cancels it while\n" +
			"it runs, and the VM stays where it was.",
		Example: "  polyvisor vm migrate web1 --host host2",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.MigrateVM(cmd.Context(), args[0], api.VMMigrate{Host: host})
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the host to move to (default: the scheduler's choice)")
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) hostDrainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "drain NAME",
		Short: "Cordon a host and migrate its VMs away (superadmin)",
		Long: "Drain a host for maintenance: it is cordoned, then each VM placed on it migrates\n" +
			"live, one after another, to the scheduler's choice. Each move is reported; a VM\n" +
			"that could not move (stopped, paused, or its migration failed) stays, with why,\n" +
			"and the command fails.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			d, err := c.DrainHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			failed := 0
			for _, mv := range d.Moves {
				if mv.Outcome != "migrated" {
					failed++
				}
			}
			if err := a.print(cmd.OutOrStdout(), d, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "VM\tTARGET\tOUTCOME\tOPERATION\tERROR")
				for _, mv := range d.Moves {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mv.VM, dash(mv.Target), mv.Outcome, dash(mv.Operation), dash(mv.Error))
				}
			}); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("drain host %q: %d of %d VM(s) did not move; the host stays cordoned", d.Host, failed, len(d.Moves))
			}
			if !a.structured() {
				fmt.Fprintf(cmd.ErrOrStderr(), "Host %s is drained: %d VM(s) moved, none left on it\n", d.Host, len(d.Moves))
			}
			return nil
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
