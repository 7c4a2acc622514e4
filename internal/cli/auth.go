package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/polyvisor/polyvisor/api"
)

// secretInput reads passwords: typed at the terminal without echo, or one
// a line from standard input with --password-stdin.
type secretInput struct {
	fromStdin bool
	in        io.Reader
	errOut    io.Writer
	lines     *bufio.Reader
}

func newSecretInput(cmd *cobra.Command, fromStdin bool) *secretInput {
	in := cmd.InOrStdin()
	return &secretInput{fromStdin: fromStdin, in: in, errOut: cmd.ErrOrStderr(),
		lines: bufio.NewReader(io.LimitReader(in, maxSecretFile))}
}

// terminal returns the descriptor of standard input when it is a terminal.
func (s *secretInput) terminal() (int, bool) {
	f, ok := s.in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// line reads the next line of standard input, without its line break.
func (s *secretInput) line() (string, error) {
	l, err := s.lines.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r"), nil
}

// read reads one secret, what naming it in prompts and errors.
func (s *secretInput) read(prompt, what string) (string, error) {
	if s.fromStdin {
		l, err := s.line()
		if err != nil {
			return "", fmt.Errorf("--password-stdin: read standard input: %w", err)
		}
		if l == "" {
			return "", usagef("--password-stdin: standard input holds no %s (give one a line)", what)
		}
		return l, nil
	}
	fd, ok := s.terminal()
	if !ok {
		return "", usagef("standard input is not a terminal to ask for the %s: give --password-stdin and write it there", what)
	}
	fmt.Fprint(s.errOut, prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(s.errOut)
	if err != nil {
		return "", fmt.Errorf("read the %s from the terminal: %w", what, err)
	}
	if len(b) == 0 {
		return "", fmt.Errorf("no %s typed", what)
	}
	return string(b), nil
}

// readNew reads a new secret; at a terminal it is asked twice.
func (s *secretInput) readNew(prompt, what string) (string, error) {
	pw, err := s.read(prompt, what)
	if err != nil || s.fromStdin {
		return pw, err
	}
	again, err := s.read("Retype "+strings.ToLower(prompt[:1])+prompt[1:], what)
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", fmt.Errorf("the two %ss typed differ; nothing was changed", what)
	}
	return pw, nil
}

// errorCode returns the API error code of err, "" when it has none.
func errorCode(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// loginResult is what login prints with -o json or yaml: never the token.
type loginResult struct {
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expiresAt"`
	Config    string    `json:"config"`
}

func (a *app) loginCommand() *cobra.Command {
	var user string
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "login [--user NAME] [--password-stdin]",
		Short: "Log in with a password and save the session token in the config file",
		Long: "Log in as a local user. The password is asked for at the terminal without\n" +
			"echo, or read from standard input with --password-stdin. The session token is\n" +
			"written to the config file (mode 0600), keeping its other settings; the server\n" +
			"and CA file logged in with are saved with it when the file holds others or none.",
		Example: "  polyvisor --server https://pv.example.com:8443 login --user alice\n" +
			"  pass show polyvisor | polyvisor login --user ci --password-stdin",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := newSecretInput(cmd, fromStdin)
			if user == "" {
				if fromStdin {
					return usagef("--user: required with --password-stdin")
				}
				if _, ok := in.terminal(); !ok {
					return usagef("--user: required when standard input is not a terminal")
				}
				fmt.Fprint(cmd.ErrOrStderr(), "User: ")
				l, err := in.line()
				if err != nil {
					return fmt.Errorf("read the user name: %w", err)
				}
				if user = strings.TrimSpace(l); user == "" {
					return usagef("--user: no user name given")
				}
			}
			path, _ := a.resolvedConfigPath()
			// The file is made by the login when it does not exist yet.
			cfg, err := a.configFrom(path, false)
			if err != nil {
				return err
			}
			fileCfg, err := loadConfigFile(path, false)
			if err != nil {
				return err
			}
			c, _, err := a.clientFor(cfg)
			if err != nil {
				return err
			}
			pw, err := in.read("Password for "+user+": ", "password")
			if err != nil {
				return err
			}
			s, err := c.Login(cmd.Context(), user, pw)
			if err != nil {
				return err
			}
			edit := configEdit{set: map[string]string{"token": s.Token}}
			if cfg.Server != "" && cfg.Server != fileCfg.Server {
				edit.set["server"] = cfg.Server
			}
			if cfg.CAFile != "" && cfg.CAFile != fileCfg.CAFile {
				abs, err := filepath.Abs(cfg.CAFile)
				if err != nil {
					return fmt.Errorf("--ca-file: %w", err)
				}
				edit.set["ca-file"] = abs
			}
			if err := editConfigFile(path, edit); err != nil {
				return fmt.Errorf("logged in as %s, but could not save the session: %w", s.User, err)
			}
			switch {
			case a.token != "":
				fmt.Fprintln(cmd.ErrOrStderr(), "Warning: --token was given: it, not the saved session, is used when given again")
			case os.Getenv(envToken) != "":
				fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %s is set and overrides the saved session; unset it to use the session\n", envToken)
			}
			res := loginResult{User: s.User, ExpiresAt: s.ExpiresAt, Config: path}
			return a.print(cmd.OutOrStdout(), res, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Logged in as %s until %s\n", s.User, s.ExpiresAt.Local().Format(time.RFC3339))
			})
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "the `user` to log in as (asked for at the terminal when not given)")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from standard input instead of the terminal")
	return cmd
}

func (a *app) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session and remove its token from the config file",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, explicit := a.resolvedConfigPath()
			cfg, err := a.config()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if cfg.Token == "" {
				return a.printOutcome(out, outcome{Kind: "session", Result: "not logged in"}, "Not logged in")
			}
			c, _, err := a.clientFor(cfg)
			if err != nil {
				return err
			}
			msg, res := "Logged out", outcome{Kind: "session", Result: "logged out"}
			if err := c.Logout(cmd.Context()); err != nil {
				if errorCode(err) != api.CodeUnauthorized {
					return err
				}
				msg, res.Result = "The session had already ended", "already ended"
			}
			fileCfg, err := loadConfigFile(path, explicit)
			if err != nil {
				return err
			}
			if fileCfg.Token != "" && fileCfg.Token == cfg.Token {
				if err := editConfigFile(path, configEdit{unset: []string{"token"}}); err != nil {
					return err
				}
				msg += "; removed the token from " + path
			}
			return a.printOutcome(out, res, msg)
		},
	}
}

func (a *app) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the credentials in force stand for, and their roles",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			w, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), w, func(tw *tabwriter.Writer) { describeWhoAmI(tw, w) })
		},
	}
}

// describeWhoAmI writes an identity and its project roles.
func describeWhoAmI(tw *tabwriter.Writer, w *api.WhoAmI) {
	row(tw, "Kind:", w.Kind)
	name := w.Name
	if w.Kind == "user" && w.TokenID == "" && strings.HasPrefix(name, "uid:") {
		// The server's name for local root on its socket, as the audit
		// log records it.
		name += " (local root on the server's socket, not a user account)"
	}
	row(tw, "Name:", name)
	row(tw, "Superadmin:", yesNo(w.Superadmin))
	row(tw, "Token:", orDash(w.TokenID))
	narrowing := "-"
	if w.Project != "" {
		narrowing = "project " + w.Project
		if w.Role != "" {
			narrowing += ", at most " + w.Role
		}
	}
	row(tw, "Narrowed to:", narrowing)
	if len(w.Roles) == 0 {
		row(tw, "Roles:", "none")
		return
	}
	fmt.Fprintln(tw)
	row(tw, "PROJECT", "ROLE")
	for _, p := range sortedKeys(w.Roles) {
		row(tw, p, w.Roles[p])
	}
}
