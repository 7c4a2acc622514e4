package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// detachKey is Ctrl-], which detaches a terminal from a console.
const detachKey = 0x1d

func (a *app) vmConsoleCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a VM's serial console (Ctrl-] detaches)",
		Long: "Attach the terminal to a VM's serial console, in raw mode: every key, Ctrl-C\n" +
			"included, goes to the guest. Ctrl-] detaches.\n\n" +
			"When standard input is not a terminal, it is sent to the console as is and the\n" +
			"console's output is written to standard output until the server ends the\n" +
			"stream or the command is interrupted.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			conn, err := c.Console(cmd.Context(), args[0], "serial")
			if err != nil {
				return err
			}
			defer conn.Close()
			return attach(cmd.Context(), conn, args[0], cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

// attach splices a console connection to the standard streams until the
// server ends it, Ctrl-] is typed on a terminal, or ctx ends.
func attach(ctx context.Context, conn net.Conn, name string, in io.Reader, out, errOut io.Writer) error {
	raw := false
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		state, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		defer func() { _ = term.Restore(int(f.Fd()), state) }()
		raw = true
		fmt.Fprintf(errOut, "Connected to the serial console of %s. Press Ctrl-] to detach.\r\n", name)
	}

	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		outDone <- err
	}()
	detached := make(chan error, 1)
	go func() {
		detach, err := copyInput(conn, in, raw)
		if detach || err != nil {
			detached <- err
		}
		// At the end of a piped input, the output goes on.
	}()

	select {
	case err := <-outDone:
		if raw {
			fmt.Fprint(errOut, "\r\nThe console was closed.\r\n")
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("read console of %s: %w", name, err)
		}
		return ctx.Err()
	case err := <-detached:
		conn.Close()
		<-outDone
		if raw {
			fmt.Fprint(errOut, "\r\nDetached.\r\n")
		}
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		return nil
	case <-ctx.Done():
		conn.Close()
		return ctx.Err()
	}
}

// copyInput sends src to the console. On a terminal (raw), Ctrl-] stops
// it and detach is true. A failed write ends it quietly: the output side
// reports why the console ended. err is a failure to read src.
func copyInput(dst io.Writer, src io.Reader, raw bool) (detach bool, err error) {
	buf := make([]byte, 4096)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if raw {
				if i := bytes.IndexByte(chunk, detachKey); i >= 0 {
					chunk, detach = chunk[:i], true
				}
			}
			if len(chunk) > 0 {
				if _, werr := dst.Write(chunk); werr != nil {
					return false, nil
				}
			}
			if detach {
				return true, nil
			}
		}
		if errors.Is(rerr, io.EOF) {
			return false, nil
		}
		if rerr != nil {
			return false, rerr
		}
	}
}
