package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) tokenCommand() *cobra.Command {
	cmd := group("token", "Manage API tokens", "tokens")
	cmd.AddCommand(a.tokenListCommand(), a.tokenCreateCommand(), a.tokenRevokeCommand())
	return cmd
}

// tokenExpiry writes when a token expires.
func tokenExpiry(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	if d := time.Until(t); d > 0 {
		return "in " + shortDuration(d)
	}
	return "expired"
}

func (a *app) tokenListCommand() *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:     "list [--user NAME]",
		Aliases: []string{"ls"},
		Short:   "List your tokens (a superadmin: every token, or --user's)",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ts, err := c.ListTokens(cmd.Context(), user)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Token]{Items: nonNil(ts)}, func(tw *tabwriter.Writer) {
				row(tw, "ID", "NAME", "KIND", "USER", "PROJECT", "ROLE", "EXPIRES", "AGE")
				for _, t := range ts {
					row(tw, t.ID, orDash(t.Name), t.Kind, t.User, orDash(t.Project), orDash(t.Role), tokenExpiry(t.ExpiresAt), age(t.CreatedAt))
				}
			})
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "only the tokens of this `user` (superadmin)")
	return cmd
}

// checkRole refuses a role that is not a project role, naming where it
// came from.
func checkRole(where, role string) error {
	if !slices.Contains(api.Roles, role) {
		return usagef("%s: %q is not a role; want one of %s", where, role, strings.Join(api.Roles, ", "))
	}
	return nil
}

func (a *app) tokenCreateCommand() *cobra.Command {
	var user, role string
	var expires time.Duration
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "create NAME [--user NAME] [--project P] [--role ROLE] [--expires DURATION] [--password-stdin]",
		Short: "Create an API token and print its secret, once",
		Long: "Create an API token. Its secret is printed this once: store it then.\n\n" +
			"--project narrows the token to one project, and --role to at most that role\n" +
			"there (in the --project given, else the project in force). Without either the\n" +
			"token acts with all of its user's rights.\n\n" +
			"Logged in with a password (polyvisor login), you are asked for it again,\n" +
			"or it is read from standard input with --password-stdin; such a token ends\n" +
			"when your password changes.",
		Example: "  polyvisor token create ci --project web --role operator --expires 720h",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role != "" {
				if err := checkRole("--role", role); err != nil {
					return err
				}
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			req := api.TokenCreate{Name: args[0], User: user, Role: role, ExpiresInSeconds: seconds(expires)}
			if projectGiven(cmd) || role != "" {
				req.Project = projectInForce(cfg)
			}
			c, _, err := a.clientFor(cfg)
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), req)
			var ae *api.Error
			if errors.As(err, &ae) && ae.Field == "current" && req.Current == "" {
				// Logged in with a password: the server wants it again.
				if req.Current, err = newSecretInput(cmd, fromStdin).read("Your password (to confirm it is you): ", "password"); err != nil {
					return err
				}
				t, err = c.CreateToken(cmd.Context(), req)
			}
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), t, func(tw *tabwriter.Writer) {
				scope := "every project of " + t.User
				if t.Project != "" {
					scope = "project " + t.Project
					if t.Role != "" {
						scope += ", at most " + t.Role
					}
				}
				expiry := "never expires"
				if !t.ExpiresAt.IsZero() {
					expiry = "expires " + t.ExpiresAt.Local().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "Token %s (%s) for %s in %s; %s.\n\n", t.ID, t.Name, t.User, scope, expiry)
				fmt.Fprintf(tw, "Secret (store it now; it is not shown again):\n\n  %s\n", t.Secret)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&user, "user", "", "the `user` the token acts as (default: you; another user: superadmin)")
	fl.StringVar(&role, "role", "", "narrow the token to at most this role in its project: "+strings.Join(api.Roles, ", "))
	fl.Var(durationValue{&expires}, "expires", "how long the token lives, e.g. 720h or 90d (default: it never expires)")
	fl.BoolVar(&fromStdin, "password-stdin", false, "read your password, when it is asked for, from standard input")
	return cmd
}

func (a *app) tokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"rm", "delete"},
		Short:   "Revoke a token",
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "token", Name: args[0], Result: "revoked"}, "Revoked token "+args[0])
		},
	}
}

func (a *app) roleCommand() *cobra.Command {
	cmd := group("role", "List the project roles, grant and revoke them", "roles")
	cmd.AddCommand(a.roleListCommand(), a.roleGrantCommand(), a.roleRevokeCommand())
	return cmd
}

func (a *app) roleListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the project roles and what each allows",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			roles, err := c.ListRoles(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Role]{Items: nonNil(roles)}, func(tw *tabwriter.Writer) {
				row(tw, "ROLE", "PERMISSIONS")
				for _, r := range roles {
					row(tw, r.Name, orDash(strings.Join(r.Permissions, ", ")))
				}
			})
		},
	}
}

func (a *app) roleGrantCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "grant USER ROLE [--project P]",
		Short: "Give a user a role in a project (--project, else the project in force), replacing any other",
		Example: "  polyvisor role grant alice admin --project web\n" +
			"  polyvisor role grant bob viewer",
		Args: exactArgs(2, "USER", "ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, role := args[0], args[1]
			if err := checkRole("ROLE", role); err != nil {
				return err
			}
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			project := projectInForce(cfg)
			if err := c.SetMember(cmd.Context(), project, user, role); err != nil {
				return err
			}
			m := api.Member{User: user, Role: role}
			return a.print(cmd.OutOrStdout(), m, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%s is now %s in project %s\n", user, role, project)
			})
		},
	}
}

func (a *app) roleRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke USER [--project P]",
		Short:   "Take a user's role in a project away (--project, else the project in force)",
		Example: "  polyvisor role revoke bob --project web",
		Args:    exactArgs(1, "USER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			project := projectInForce(cfg)
			if err := c.RemoveMember(cmd.Context(), project, args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "member", Name: args[0], Project: project, Result: "revoked"},
				args[0]+" no longer has a role in project "+project)
		},
	}
}
