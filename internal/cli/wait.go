package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// addNoWait adds --no-wait to a command that starts an operation.
func addNoWait(cmd *cobra.Command, noWait *bool) {
	cmd.Flags().BoolVar(noWait, "no-wait", false, "print the operation id and return without waiting for it")
}

// finish ends a command that started op: with noWait it prints the
// operation (its id in a table) and returns; otherwise it follows the
// operation, printing its progress on stderr, prints the outcome and
// returns an error when the operation failed or was cancelled.
func (a *app) finish(cmd *cobra.Command, c *client.Client, op *api.Operation, noWait bool) error {
	out := cmd.OutOrStdout()
	if noWait {
		if a.structured() {
			return a.print(out, op, nil)
		}
		_, err := fmt.Fprintln(out, op.ID)
		return err
	}
	final, err := a.wait(cmd.Context(), cmd.ErrOrStderr(), c, op.ID)
	if err != nil {
		return err
	}
	if err := a.print(out, final, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "%s %s\n", describeOp(final), final.Status)
	}); err != nil {
		return err
	}
	return client.OperationError(final)
}

// wait follows an operation to its end with progress on w.
func (a *app) wait(ctx context.Context, w io.Writer, c *client.Client, id string) (*api.Operation, error) {
	p := &opProgress{w: w, tty: isTerminal(w)}
	final, err := c.WaitOperation(ctx, id, p.update)
	p.done()
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("stopped waiting for operation %s, which goes on (follow it with 'polyvisor op wait %s'): %w", id, id, err)
		}
		return nil, err
	}
	return final, nil
}

// describeOp names an operation for people: "vm.create vm/web1".
func describeOp(op *api.Operation) string {
	s := op.Kind
	if op.Target.Name != "" {
		s += " " + op.Target.Kind + "/" + op.Target.Name
	}
	return s
}

// opProgress prints an operation's progress: one line per change, or one
// line redrawn in place on a terminal.
type opProgress struct {
	w    io.Writer
	tty  bool
	last string
}

func (p *opProgress) update(op *api.Operation) {
	if op.Done() {
		return // the outcome is printed by the caller
	}
	line := describeOp(op) + ": " + op.Status
	if op.Progress > 0 {
		line += fmt.Sprintf(" %d%%", op.Progress)
	}
	if op.Message != "" {
		line += " - " + op.Message
	}
	line = termSafe(line, true)
	if line == p.last {
		return
	}
	p.last = line
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// done ends the line redrawn on a terminal.
func (p *opProgress) done() {
	if p.tty && p.last != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
