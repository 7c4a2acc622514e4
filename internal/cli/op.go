package cli

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) opCommand() *cobra.Command {
	cmd := group("op", "Follow operations: the asynchronous actions of every mutation", "ops", "operation", "operations")
	cmd.AddCommand(a.opListCommand(), a.opShowCommand(), a.opWaitCommand(), a.opCancelCommand())
	return cmd
}

func (a *app) opListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List operations, oldest first: the newest is last",
		Long: "List operations in the order they were made, oldest first, so that the newest\n" +
			"is last, next to the prompt, as in a log ('op list | tail' shows the latest).\n" +
			"The order is the server's and holds across pages: --limit N lists the N oldest.\n" +
			"Finished operations are kept for a day.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ops, err := listItems(cmd.Context(), opts, c.ListOperations, c.ListAllOperations)
			if err != nil {
				return err
			}
			sortOperations(ops)
			return a.print(cmd.OutOrStdout(), api.List[api.Operation]{Items: nonNil(ops)}, func(tw *tabwriter.Writer) {
				head := []any{"ID", "KIND", "TARGET", "STATUS", "PROGRESS", "AGE", "MESSAGE"}
				if opts.AllProjects {
					head = append([]any{"PROJECT"}, head...)
				}
				row(tw, head...)
				for _, op := range ops {
					cells := []any{op.ID, op.Kind, op.Target.Kind + "/" + op.Target.Name, op.Status,
						fmt.Sprintf("%d%%", op.Progress), age(op.CreatedAt), opMessage(&op)}
					if opts.AllProjects {
						cells = append([]any{orDash(op.Target.Project)}, cells...)
					}
					row(tw, cells...)
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	allProjectsFlag(cmd, &opts, "operations")
	cmd.Flags().StringVar(&opts.State, "state", "", "only the operations of this status (pending, running, succeeded, failed, cancelled)")
	return cmd
}

// sortOperations orders operations oldest first. The server lists them
// so already (their ids sort by time); this keeps the order of a server
// that still holds operations of older, unordered ids.
func sortOperations(ops []api.Operation) {
	sort.SliceStable(ops, func(i, j int) bool {
		if !ops[i].CreatedAt.Equal(ops[j].CreatedAt) {
			return ops[i].CreatedAt.Before(ops[j].CreatedAt)
		}
		return ops[i].ID < ops[j].ID
	})
}

// opMessage is an operation's error, else its message.
func opMessage(op *api.Operation) string {
	if op.Error != nil {
		return op.Error.Error()
	}
	return orDash(op.Message)
}

// describeOperation writes an operation's details.
func describeOperation(tw *tabwriter.Writer, op *api.Operation) {
	row(tw, "ID:", op.ID)
	row(tw, "Kind:", op.Kind)
	row(tw, "Target:", op.Target.Kind+"/"+op.Target.Name)
	row(tw, "Status:", op.Status)
	row(tw, "Progress:", fmt.Sprintf("%d%%", op.Progress))
	if op.Message != "" {
		row(tw, "Message:", op.Message)
	}
	if op.Error != nil {
		row(tw, "Error:", fmt.Sprintf("%s (%s)", op.Error.Error(), op.Error.Code))
	}
	if len(op.Params) > 0 && string(op.Params) != "null" {
		row(tw, "Params:", string(op.Params))
	}
	row(tw, "Created:", when(op.CreatedAt))
	row(tw, "Started:", when(op.StartedAt))
	row(tw, "Finished:", when(op.FinishedAt))
}

func (a *app) opShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Aliases: []string{"get"},
		Short:   "Show an operation",
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.GetOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), op, func(tw *tabwriter.Writer) { describeOperation(tw, op) })
		},
	}
}

func (a *app) opWaitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for an operation to end; the exit code follows its outcome",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			return a.finish(cmd, c, &api.Operation{ID: args[0]}, false)
		},
	}
}

func (a *app) opCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a pending operation",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.CancelOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), op, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%s %s\n", describeOp(op), op.Status)
			})
		},
	}
}
