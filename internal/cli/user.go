package cli

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) userCommand() *cobra.Command {
	cmd := group("user", "Manage local users", "users")
	cmd.AddCommand(
		a.userListCommand(),
		a.userShowCommand(),
		a.userCreateCommand(),
		a.userUpdateCommand(),
		a.userDeleteCommand(),
		a.userPasswdCommand(),
	)
	return cmd
}

// rolesList writes project roles as web=admin,ops=viewer.
func rolesList(roles map[string]string) string {
	if len(roles) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(roles))
	for _, p := range sortedKeys(roles) {
		parts = append(parts, p+"="+roles[p])
	}
	return strings.Join(parts, ",")
}

// userState is enabled or disabled, marking a user without a password.
func userState(u *api.User) string {
	s := "enabled"
	if u.Disabled {
		s = "disabled"
	}
	if !u.HasPassword {
		s += ",no-password"
	}
	return s
}

func (a *app) userListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List users (superadmin)",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			us, err := c.ListUsers(cmd.Context())
			if err != nil {
				return err
			}
			sort.Slice(us, func(i, j int) bool { return us[i].Name < us[j].Name })
			return a.print(cmd.OutOrStdout(), api.List[api.User]{Items: nonNil(us)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "DISPLAY NAME", "SUPERADMIN", "STATE", "ROLES", "AGE")
				for _, u := range us {
					row(tw, u.Name, orDash(u.DisplayName), yesNo(u.Superadmin), userState(&u), rolesList(u.Roles), age(u.CreatedAt))
				}
			})
		},
	}
}

// describeUser writes a user's details and roles.
func describeUser(tw *tabwriter.Writer, u *api.User) {
	row(tw, "Name:", u.Name)
	row(tw, "Display name:", orDash(u.DisplayName))
	row(tw, "Superadmin:", yesNo(u.Superadmin))
	row(tw, "Disabled:", yesNo(u.Disabled))
	row(tw, "Password:", yesNo(u.HasPassword))
	row(tw, "Labels:", labels(u.Labels))
	row(tw, "Created:", when(u.CreatedAt))
	fmt.Fprintln(tw)
	if len(u.Roles) == 0 {
		fmt.Fprintln(tw, "No project roles.")
		return
	}
	row(tw, "PROJECT", "ROLE")
	for _, p := range sortedKeys(u.Roles) {
		row(tw, p, u.Roles[p])
	}
}

func (a *app) userShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a user and their project roles",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			u, err := c.GetUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) { describeUser(tw, u) })
		},
	}
}

func (a *app) userCreateCommand() *cobra.Command {
	var displayName string
	var superadmin, fromStdin, noPassword bool
	cmd := &cobra.Command{
		Use:   "create NAME [--display-name TEXT] [--superadmin] [--password-stdin | --no-password]",
		Short: "Create a local user (superadmin)",
		Long: "Create a local user. Its password is asked for twice at the terminal, or read\n" +
			"from standard input with --password-stdin; --no-password makes a user that\n" +
			"cannot log in until one is set with 'polyvisor user passwd NAME'.",
		Example: "  polyvisor user create alice --display-name 'Alice Liddell'\n" +
			"  printf '%s\\n' \"$PW\" | polyvisor user create ci --password-stdin",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fromStdin && noPassword {
				return usagef("--password-stdin and --no-password: give one")
			}
			req := api.UserCreate{Name: args[0], DisplayName: displayName, Superadmin: superadmin}
			if !noPassword {
				in := newSecretInput(cmd, fromStdin)
				if _, ok := in.terminal(); !ok && !fromStdin {
					return usagef("standard input is not a terminal to ask for the password: give --password-stdin or --no-password")
				}
				pw, err := in.readNew("Password for "+args[0]+": ", "password")
				if err != nil {
					return err
				}
				req.Password = pw
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			u, err := c.CreateUser(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) { describeUser(tw, u) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&displayName, "display-name", "", "the user's full name")
	fl.BoolVar(&superadmin, "superadmin", false, "let the user do everything in every project")
	fl.BoolVar(&fromStdin, "password-stdin", false, "read the password from standard input instead of the terminal")
	fl.BoolVar(&noPassword, "no-password", false, "create the user without a password")
	return cmd
}

func (a *app) userUpdateCommand() *cobra.Command {
	var displayName string
	var superadmin, disable, enable bool
	cmd := &cobra.Command{
		Use:   "update NAME [--display-name TEXT] [--superadmin=true|false] [--disable | --enable]",
		Short: "Change a user (superadmin)",
		Example: "  polyvisor user update bob --disable\n" +
			"  polyvisor user update alice --superadmin=false",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			var req api.UserUpdate
			if fl.Changed("display-name") {
				req.DisplayName = &displayName
			}
			if fl.Changed("superadmin") {
				req.Superadmin = &superadmin
			}
			switch {
			case fl.Changed("disable") && fl.Changed("enable"):
				return usagef("--disable and --enable: give one")
			case fl.Changed("disable"):
				v := disable
				req.Disabled = &v
			case fl.Changed("enable"):
				v := !enable
				req.Disabled = &v
			}
			if req == (api.UserUpdate{}) {
				return usagef("give --display-name, --superadmin, --disable or --enable")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			u, err := c.UpdateUser(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) { describeUser(tw, u) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&displayName, "display-name", "", "the user's full name (\"\" clears it)")
	fl.BoolVar(&superadmin, "superadmin", false, "make the user a superadmin, or not with --superadmin=false")
	fl.BoolVar(&disable, "disable", false, "refuse the user's logins and tokens")
	fl.BoolVar(&enable, "enable", false, "accept the user's logins and tokens again")
	return cmd
}

func (a *app) userDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a user with their tokens and roles (superadmin)",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteUser(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "user", Name: args[0], Result: "deleted"}, "Deleted user "+args[0])
		},
	}
}

func (a *app) userPasswdCommand() *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "passwd [NAME]",
		Short: "Change your password, or set another user's (superadmin)",
		Long: "Change your own password (NAME left out or your own name): the current one is\n" +
			"asked for, then the new one twice. A superadmin setting another user's password\n" +
			"gives only the new one, and sets the first password of a user that has none.\n" +
			"With --password-stdin, standard input holds the current and the new password on\n" +
			"two lines, or only the new one for another user or a first password.\n" +
			"Your other login sessions end; your API tokens keep working. A token narrowed\n" +
			"to a project cannot change a password.\n\n" +
			"A password needs at least 8 characters, at least 4 different ones, must not be\n" +
			"built on the user name, and must not be a common password.",
		Example: "  polyvisor user passwd\n" +
			"  printf '%s\\n%s\\n' \"$OLD\" \"$NEW\" | polyvisor user passwd --password-stdin\n" +
			"  printf '%s\\n' \"$NEW\" | polyvisor user passwd bob --password-stdin",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("%s takes at most one argument: NAME (got %d)", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			in := newSecretInput(cmd, fromStdin)
			if _, ok := in.terminal(); !ok && !fromStdin {
				return usagef("standard input is not a terminal to ask for the passwords: give --password-stdin")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			me, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			user := me.Name
			if len(args) == 1 {
				user = args[0]
			}
			own := me.Kind == "user" && user == me.Name
			if !own && !me.Superadmin {
				return fmt.Errorf("only a superadmin may set the password of another user (you are %s)", me.Name)
			}
			var current string
			if own {
				u, err := c.GetUser(cmd.Context(), user)
				if err != nil {
					return err
				}
				switch {
				case u.HasPassword:
					if current, err = in.read("Current password: ", "current password"); err != nil {
						return err
					}
				case !me.Superadmin:
					return fmt.Errorf("%s has no password yet: a superadmin sets the first one (polyvisor user passwd %s)", user, user)
				}
			}
			pw, err := in.readNew("New password for "+user+": ", "new password")
			if err != nil {
				return err
			}
			if err := c.SetPassword(cmd.Context(), user, current, pw); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "user", Name: user, Result: "password set"}, "Password of "+user+" changed")
		},
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the passwords from standard input, one a line")
	return cmd
}
