package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
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
	var noWait bool
	cmd := &cobra.Command{
		Use:   "drain NAME",
		Short: "Cordon a host and move its VMs away (superadmin)",
		Long: "Drain a host for maintenance: it is cordoned, then a host.drain operation moves\n" +
			"each VM placed on it, one after another, to the scheduler's choice: running VMs\n" +
			"migrate live, stopped ones move with their disks copied, paused ones stay (with\n" +
			"why). The command prints each move as it ends and fails if a VM stayed; with\n" +
			"--no-wait it prints the operation's id. `polyvisor op cancel ID` cancels the\n" +
			"drain: the move under way is cancelled, the VMs not yet moved stay.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.DrainHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if noWait {
				return a.finish(cmd, c, op, true)
			}
			errw := cmd.ErrOrStderr()
			told := map[string]bool{}
			tell := func(op *api.Operation) {
				d, err := client.DrainResult(op)
				if err != nil || a.structured() {
					return
				}
				for _, mv := range d.Moves {
					if mv.Outcome == "pending" || mv.Outcome == "moving" || told[mv.VM] {
						continue
					}
					told[mv.VM] = true
					line := fmt.Sprintf("%s: %s", termSafe(mv.VM, true), mv.Outcome)
					if mv.Target != "" {
						line += " to " + termSafe(mv.Target, true)
					}
					if mv.Error != "" {
						line += ": " + termSafe(mv.Error, true)
					}
					fmt.Fprintln(errw, line)
				}
			}
			tell(op)
			final, err := c.WaitOperation(cmd.Context(), op.ID, tell)
			if err != nil {
				return fmt.Errorf("stopped waiting for the drain (operation %s), which goes on (follow it with 'polyvisor op wait %s'): %w", op.ID, op.ID, err)
			}
			tell(final)
			d, err := client.DrainResult(final)
			if err != nil {
				return err
			}
			if err := a.print(cmd.OutOrStdout(), final, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "VM\tTARGET\tOUTCOME\tOPERATION\tERROR")
				for _, mv := range d.Moves {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mv.VM, dash(mv.Target), mv.Outcome, dash(mv.Operation), dash(mv.Error))
				}
			}); err != nil {
				return err
			}
			if final.Status != api.OpSucceeded {
				return fmt.Errorf("drain host %q: %w", args[0], client.OperationError(final))
			}
			if !a.structured() {
				fmt.Fprintf(errw, "Host %s is drained: %d VM(s) moved, none left on it\n", d.Host, len(d.Moves))
			}
			return nil
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
