package cli

import (
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// defaultLeaseGrace is the server's grace period when a project sets none.
const defaultLeaseGrace = 24 * time.Hour

func (a *app) projectCommand() *cobra.Command {
	cmd := group("project", "Manage projects: the tenants that own VMs, images and operations", "projects")
	cmd.AddCommand(
		a.projectListCommand(),
		a.projectShowCommand(),
		a.projectCreateCommand(),
		a.projectUpdateCommand(),
		a.projectDeleteCommand(),
		a.projectUseCommand(),
	)
	return cmd
}

// usedOf writes usage against a limit: "3/10", or "3" with no limit.
func usedOf(used int64, limit *int64, format func(int64) string) string {
	if limit == nil {
		return format(used)
	}
	return format(used) + "/" + format(*limit)
}

// leaseSetting writes a project's lease setting in seconds.
func leaseSetting(secs int64, none string) string {
	if secs <= 0 {
		return none
	}
	return shortDuration(time.Duration(secs) * time.Second)
}

func (a *app) projectListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the projects you belong to (every project for a superadmin)",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ps, err := c.ListProjects(cmd.Context(), opts)
			if err != nil {
				return err
			}
			count := func(n int64) string { return strconv.FormatInt(n, 10) }
			return a.print(cmd.OutOrStdout(), api.List[api.Project]{Items: nonNil(ps)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "VMS", "VCPUS", "MEMORY", "DISK", "MEMBERS", "MAX LEASE", "AGE", "DESCRIPTION")
				for _, p := range ps {
					q, u := p.Spec.Quota, p.Status.Usage
					row(tw, p.Name, usedOf(u.VMs, q.VMs, count), usedOf(u.VCPUs, q.VCPUs, count),
						usedOf(u.MemoryMiB, q.MemoryMiB, sizeOrZero), usedOf(u.DiskMiB, q.DiskMiB, sizeOrZero),
						len(p.Spec.Members), leaseSetting(p.Spec.MaxLeaseSeconds, "-"), age(p.CreatedAt), orDash(p.Spec.Description))
				}
			})
		},
	}
	cmd.Flags().StringVarP(&opts.Selector, "selector", "l", "", "label selector: k=v,k!=v,k,!k")
	return cmd
}

// describeProject writes a project's settings, members and quota.
func describeProject(tw *tabwriter.Writer, p *api.Project) {
	s := p.Spec
	row(tw, "Name:", p.Name)
	row(tw, "Description:", orDash(s.Description))
	row(tw, "Labels:", labels(p.Labels))
	row(tw, "Max lease:", leaseSetting(s.MaxLeaseSeconds, "none (VMs need no lease)"))
	grace := leaseSetting(s.LeaseGraceSeconds, "")
	if grace == "" {
		grace = shortDuration(defaultLeaseGrace) + " (default)"
	}
	row(tw, "Lease grace:", grace)
	row(tw, "HA default:", haPolicy(s.HADefault))
	row(tw, "Created:", when(p.CreatedAt))
	fmt.Fprintln(tw)
	if len(s.Members) == 0 {
		fmt.Fprintln(tw, "No members.")
	} else {
		row(tw, "MEMBER", "ROLE")
		for _, u := range sortedKeys(s.Members) {
			row(tw, u, s.Members[u])
		}
	}
	fmt.Fprintln(tw)
	writeQuota(tw, s.Quota, p.Status.Usage)
}

func (a *app) projectShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show [NAME]",
		Aliases: []string{"get"},
		Short:   "Show a project's settings, members, quota and usage (default: the project in force)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("%s takes at most one argument: NAME (got %d)", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			name := projectInForce(cfg)
			if len(args) == 1 {
				name = args[0]
			}
			p, err := c.GetProject(cmd.Context(), name)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describeProject(tw, p) })
		},
	}
}

func (a *app) projectCreateCommand() *cobra.Command {
	var description string
	var maxLease, leaseGrace time.Duration
	var lbls map[string]string
	var qf quotaFlags
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a project (superadmin)",
		Example: "  polyvisor project create web --description 'web team' --max-lease 72h --lease-grace 24h \\\n" +
			"      --vcpus 32 --memory 64G --disk 1T --vms 20",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ch := qf.changes(cmd)
			quota, err := applyQuotaChanges(api.Quota{}, ch)
			if err != nil {
				return err
			}
			req := api.ProjectCreate{
				Name: args[0], Description: description, Labels: lbls, Quota: quota,
				MaxLeaseSeconds: seconds(maxLease), LeaseGraceSeconds: seconds(leaseGrace),
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.CreateProject(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describeProject(tw, p) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&description, "description", "", "what the project is for")
	fl.Var(labelsValue{&lbls}, "label", "add a label (repeatable)")
	addLeaseFlags(cmd, &maxLease, &leaseGrace)
	qf.register(cmd, false)
	return cmd
}

// addLeaseFlags adds --max-lease and --lease-grace.
func addLeaseFlags(cmd *cobra.Command, maxLease, grace *time.Duration) {
	cmd.Flags().Var(durationValue{maxLease}, "max-lease", "the longest lease a VM may have, e.g. 72h or 7d; every VM then gets one (0: VMs need no lease)")
	cmd.Flags().Var(durationValue{grace}, "lease-grace", "how long an expired VM stays stopped before it is deleted (default 24h)")
}

func (a *app) projectUpdateCommand() *cobra.Command {
	var description, haDefault string
	var maxLease, leaseGrace time.Duration
	cmd := &cobra.Command{
		Use:     "update NAME [--description TEXT] [--max-lease DURATION] [--lease-grace DURATION] [--ha-default restart|none]",
		Short:   "Change a project's settings (project admin)",
		Example: "  polyvisor project update web --max-lease 7d --lease-grace 48h",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			var req api.ProjectUpdate
			if fl.Changed("description") {
				req.Description = &description
			}
			if fl.Changed("max-lease") {
				v := seconds(maxLease)
				req.MaxLeaseSeconds = &v
			}
			if fl.Changed("lease-grace") {
				v := seconds(leaseGrace)
				req.LeaseGraceSeconds = &v
			}
			if fl.Changed("ha-default") {
				if haDefault != api.HARestart && haDefault != api.HANone {
					return usagef("--ha-default: must be restart or none, not %q", haDefault)
				}
				req.HADefault = &haDefault
			}
			if req == (api.ProjectUpdate{}) {
				return usagef("give --description, --max-lease, --lease-grace or --ha-default (the quota is set with 'polyvisor quota set')")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.UpdateProject(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describeProject(tw, p) })
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the project is for (\"\" clears it)")
	addLeaseFlags(cmd, &maxLease, &leaseGrace)
	cmd.Flags().StringVar(&haDefault, "ha-default", "", "the HA policy of VMs created without one (restart or none), applied to those with no disks of their own")
	return cmd
}

func (a *app) projectDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an empty project (superadmin)",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteProject(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "project", Name: args[0], Result: "deleted"}, "Deleted project "+args[0])
		},
	}
}

func (a *app) projectUseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "use NAME",
		Short: "Make a project the one commands act in, in the config file",
		Long: "Write project: NAME into the config file, so that commands act in that\n" +
			"project unless --project or POLYVISOR_PROJECT says otherwise. The project is\n" +
			"looked up on the server first.",
		Example: "  polyvisor project use web\n  polyvisor project use default",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			path, _ := a.resolvedConfigPath()
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if _, err := c.GetProject(cmd.Context(), name); err != nil {
				return err
			}
			if err := editConfigFile(path, configEdit{set: map[string]string{"project": name}}); err != nil {
				return err
			}
			if v := os.Getenv(envProject); v != "" && v != name {
				fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %s=%s overrides the config file; unset it to act in %s\n", envProject, v, name)
			}
			return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: "project", Name: name, Result: "in use"},
				fmt.Sprintf("Now acting in project %s (saved in %s)", name, path))
		},
	}
}
