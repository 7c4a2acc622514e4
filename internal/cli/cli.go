// Package cli is the polyvisor command line: cobra commands that manage
// VMs, images, hosts and operations through the Go client.
//
// cmd/polyvisor calls Execute, handing it the daemon commands (server,
// agent), which live elsewhere. Output is a human table by default and
// JSON or YAML with -o; long operations show their progress and are waited
// for unless --no-wait is given. The exit code is 0 on success, 1 when the
// command or its operation failed, and 2 for a usage error.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// Exit codes of Execute.
const (
	ExitOK      = 0 // the command, and its operation, succeeded
	ExitFailure = 1 // the command failed, or its operation failed or was cancelled
	ExitUsage   = 2 // bad flags or arguments
)

// userAgent is sent to the server.
const userAgent = "polyvisor-cli"

// usageError is a mistake in the command line: flags, arguments.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// app holds the global flags every command shares.
type app struct {
	configPath string
	server     string
	token      string
	caFile     string
	project    string
	output     outputFormat
}

// NewRootCommand returns the polyvisor command with every client verb and
// the given extra commands (the daemons: server, agent).
func NewRootCommand(extra ...*cobra.Command) *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   "polyvisor",
		Short: "Manage virtual machines across hosts",
		Long: "polyvisor manages VMs, images and hosts through a Polyvisor server.\n\n" +
			"The server and credentials come from --server/--token/--ca-file, else from\n" +
			"POLYVISOR_SERVER/POLYVISOR_TOKEN/POLYVISOR_CA_FILE, else from the config file\n" +
			"($XDG_CONFIG_HOME/polyvisor/config.yaml, by default ~/.config/polyvisor/config.yaml).\n" +
			"The project commands act in comes from --project, else POLYVISOR_PROJECT, else\n" +
			"the config file's project: (set it with 'polyvisor project use'), else \"default\".",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRun,
	}
	root.SetFlagErrorFunc(flagError)

	pf := root.PersistentFlags()
	pf.StringVar(&a.server, "server", "", "server URL: https://host:port, host:port (https is assumed) or unix:///path/to/socket")
	pf.StringVar(&a.token, "token", "", "bearer token")
	pf.StringVar(&a.caFile, "ca-file", "", "PEM file of the CA that signed the server's certificate")
	pf.StringVar(&a.configPath, "config", "", "config file (default $XDG_CONFIG_HOME/polyvisor/config.yaml)")
	pf.StringVar(&a.project, "project", "", "the `project` to act in (default: POLYVISOR_PROJECT, else the config's project, else \"default\")")
	pf.VarP(&a.output, "output", "o", "output format: table, json or yaml")

	root.AddCommand(a.vmCommand(), a.imageCommand(), a.hostCommand(), a.opCommand(), a.providerCommand())
	root.AddCommand(a.loginCommand(), a.logoutCommand(), a.whoamiCommand(), a.projectCommand(), a.userCommand(),
		a.tokenCommand(), a.roleCommand(), a.quotaCommand(), a.auditCommand())
	root.AddCommand(a.networkCommand(), a.subnetCommand(), a.portCommand(), a.secgroupCommand(), a.floatingIPCommand())
	root.AddCommand(a.versionCommand())
	root.AddCommand(a.poolCommand(), a.volumeCommand())
	root.AddCommand(a.planCommand())
	root.AddCommand(a.balanceCommand())
	// The client verbs' errors speak of the CLI's flags and config; the
	// daemons have their own.
	a.explainErrors(root)
	root.AddCommand(a.alarmCommand())
	root.AddCommand(a.clusterCommand())
	root.AddCommand(a.eventsCommand())
	root.AddCommand(a.vmMigrationCommand())
	root.AddCommand(extra...)
	return root
}

// groupRun is the RunE of a command that only holds subcommands: help
// without arguments, a usage error with an unknown one.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		// cobra sets its default only on the root's own lookup.
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return &usageError{err: errors.New(msg)}
}

// group returns a command that holds subcommands.
func group(use, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Aliases: aliases, Args: cobra.ArbitraryArgs, RunE: groupRun}
}

// exactArgs is cobra.ExactArgs returning a usage error naming the args.
func exactArgs(n int, names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d argument(s): %s (got %d)", cmd.CommandPath(), n, strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// noArgs is cobra.NoArgs returning a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments (got %q)", cmd.CommandPath(), args[0])
	}
	return nil
}

// Execute runs the command line of the process and returns its exit code.
func Execute(ctx context.Context, extra ...*cobra.Command) int {
	return run(ctx, NewRootCommand(extra...), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

// run executes root with args and the given standard streams, prints an
// error as "Error: ..." and maps it to an exit code.
func run(ctx context.Context, root *cobra.Command, args []string, in io.Reader, out, errOut io.Writer) int {
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(errOut, "Error: %s\n", termSafe(err.Error(), false))
	var ue *usageError
	if errors.As(err, &ue) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(errOut, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return ExitUsage
	}
	return ExitFailure
}

// DefaultSocket is the socket of a server run with its default data dir;
// the CLI uses it when no server is configured.
const DefaultSocket = "/var/lib/polyvisor/polyvisor.sock"

// client makes a client from the configuration in force.
func (a *app) client() (*client.Client, Config, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, cfg, err
	}
	return a.clientFor(cfg)
}

// clientFor makes a client from cfg, falling back to the local socket
// when cfg names no server.
func (a *app) clientFor(cfg Config) (*client.Client, Config, error) {
	if cfg.Server == "" {
		// A server started with its defaults on this machine serves local
		// root on its socket.
		if _, err := os.Stat(DefaultSocket); err == nil {
			cfg.Server = "unix://" + DefaultSocket
		}
	}
	if cfg.Server == "" {
		path, _ := a.resolvedConfigPath()
		return nil, cfg, fmt.Errorf("no server configured: give --server, set POLYVISOR_SERVER or write server: in %s", path)
	}
	c, err := client.New(client.Config{URL: cfg.Server, Token: cfg.Token, CAFile: cfg.CAFile, UserAgent: userAgent, Project: cfg.Project})
	if err != nil {
		return nil, cfg, err
	}
	return c, cfg, nil
}

// config returns the configuration in force: the file, then the
// environment, then the flags.
func (a *app) config() (Config, error) {
	path, explicit := a.resolvedConfigPath()
	return a.configFrom(path, explicit)
}

// configFrom is config with the file at path, which must exist when
// mustExist.
func (a *app) configFrom(path string, mustExist bool) (Config, error) {
	cfg, err := loadConfigFile(path, mustExist)
	if err != nil {
		return cfg, err
	}
	cfg.applyEnv()
	if a.server != "" {
		cfg.Server = a.server
	}
	if a.token != "" {
		cfg.Token = a.token
	}
	if a.caFile != "" {
		cfg.CAFile = a.caFile
	}
	if a.project != "" {
		cfg.Project = a.project
	}
	return cfg, nil
}

// projectInForce is the project commands act in, "default" when none is
// configured.
func projectInForce(cfg Config) string {
	if cfg.Project == "" {
		return api.DefaultProject
	}
	return cfg.Project
}

// projectGiven tells whether --project was given on the command line.
func projectGiven(cmd *cobra.Command) bool {
	f := cmd.Flags().Lookup("project")
	return f != nil && f.Changed
}

// resolvedConfigPath returns the config file to read, and whether the user
// named it (then it must exist).
func (a *app) resolvedConfigPath() (string, bool) {
	if a.configPath != "" {
		return a.configPath, true
	}
	if p := os.Getenv(envConfig); p != "" {
		return p, true
	}
	p, err := ConfigPath()
	if err != nil {
		return "", false
	}
	return p, false
}
