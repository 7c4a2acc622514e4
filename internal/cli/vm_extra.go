package cli

import (
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

func (a *app) vmReconfigureCommand() *cobra.Command {
	var vcpus int
	var memoryMiB int64
	var noWait bool
	cmd := &cobra.Command{
		Use:     "reconfigure NAME [--vcpus N] [--memory SIZE]",
		Short:   "Change the CPUs and memory of a stopped VM",
		Example: "  polyvisor vm reconfigure web1 --vcpus 4 --memory 8G",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if !fl.Changed("vcpus") && !fl.Changed("memory") {
				return usagef("give --vcpus, --memory or both")
			}
			if fl.Changed("vcpus") && vcpus < 1 {
				return usagef("--vcpus: must be at least 1")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.ReconfigureVM(cmd.Context(), args[0], api.VMReconfigure{VCPUs: vcpus, MemoryMiB: memoryMiB}, client.VMActionOptions{})
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	cmd.Flags().IntVar(&vcpus, "vcpus", 0, "new number of virtual CPUs")
	cmd.Flags().Var(sizeValue{&memoryMiB}, "memory", "new memory, e.g. 1G or 512M (a bare number is MiB)")
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) vmSnapshotCommand() *cobra.Command {
	cmd := group("snapshot", "Manage a VM's snapshots (VMs of providers that offer them)", "snapshots", "snap")
	cmd.AddCommand(a.vmSnapshotCreateCommand(), a.vmSnapshotListCommand(), a.vmSnapshotRevertCommand(), a.vmSnapshotDeleteCommand())
	return cmd
}

func (a *app) vmSnapshotCreateCommand() *cobra.Command {
	var description string
	var noWait bool
	cmd := &cobra.Command{
		Use:     "create NAME SNAPSHOT",
		Short:   "Take a snapshot of a VM",
		Example: "  polyvisor vm snapshot create web1 before-upgrade --description 'kernel 6.1'",
		Args:    exactArgs(2, "NAME", "SNAPSHOT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.CreateSnapshot(cmd.Context(), args[0], api.SnapshotCreate{Name: args[1], Description: description})
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the snapshot is for")
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) vmSnapshotListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list NAME",
		Aliases: []string{"ls"},
		Short:   "List a VM's snapshots",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			snaps, err := c.ListSnapshots(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Snapshot]{Items: nonNil(snaps)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "CURRENT", "AGE", "DESCRIPTION")
				for _, s := range snaps {
					current := ""
					if s.Current {
						current = "*"
					}
					row(tw, s.Name, orDash(current), age(s.CreatedAt), orDash(s.Description))
				}
			})
		},
	}
}

// vmSnapshotActionCommand is revert or delete of one snapshot.
func (a *app) vmSnapshotActionCommand(use, short string, aliases []string, do func(c *client.Client, cmd *cobra.Command, vm, snap string) (*api.Operation, error)) *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:     use + " NAME SNAPSHOT",
		Aliases: aliases,
		Short:   short,
		Args:    exactArgs(2, "NAME", "SNAPSHOT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := do(c, cmd, args[0], args[1])
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) vmSnapshotRevertCommand() *cobra.Command {
	return a.vmSnapshotActionCommand("revert", "Return a VM to one of its snapshots", nil,
		func(c *client.Client, cmd *cobra.Command, vm, snap string) (*api.Operation, error) {
			return c.RevertSnapshot(cmd.Context(), vm, snap)
		})
}

func (a *app) vmSnapshotDeleteCommand() *cobra.Command {
	return a.vmSnapshotActionCommand("delete", "Delete a snapshot of a VM", []string{"rm"},
		func(c *client.Client, cmd *cobra.Command, vm, snap string) (*api.Operation, error) {
			return c.DeleteSnapshot(cmd.Context(), vm, snap)
		})
}

func (a *app) vmConsoleTicketCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "console-ticket NAME",
		Short: "Get a ticket for the console a VM's provider serves itself (vSphere WebMKS)",
		Long: "Get how to reach the console of a VM whose provider serves it itself: a\n" +
			"vSphere WebMKS ticket, valid a short while. The ticket is a secret. VMs on\n" +
			"Polyvisor's own hosts use 'polyvisor vm console' instead.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			t, err := c.ConsoleTicket(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), t, func(tw *tabwriter.Writer) {
				row(tw, "Type:", t.Type)
				port := "-"
				if t.Port > 0 {
					port = strconv.Itoa(t.Port)
				}
				row(tw, "Host:", orDash(t.Host))
				row(tw, "Port:", port)
				if t.URL != "" {
					row(tw, "URL:", t.URL)
				}
				if t.Ticket != "" {
					row(tw, "Ticket:", t.Ticket)
				}
			})
		},
	}
}
