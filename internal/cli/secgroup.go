package cli

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) secgroupCommand() *cobra.Command {
	cmd := group("secgroup", "Manage security groups: stateful rules on the ports that name them", "secgroups", "security-group")
	rule := group("rule", "Add and remove the rules of a security group", "rules")
	rule.AddCommand(a.ruleAddCommand(), a.ruleRemoveCommand())
	cmd.AddCommand(a.secgroupListCommand(), a.secgroupShowCommand(), a.secgroupCreateCommand(), a.secgroupDeleteCommand(), rule)
	return cmd
}

func describeGroup(tw *tabwriter.Writer, g *api.SecurityGroup) {
	row(tw, "Name:", g.Name)
	row(tw, "Description:", orDash(g.Spec.Description))
	row(tw, "Labels:", labels(g.Labels))
	fmt.Fprintln(tw)
	if len(g.Spec.Rules) == 0 {
		fmt.Fprintln(tw, "No rules: nothing in, nothing out.")
		return
	}
	row(tw, "RULE", "DIRECTION", "ETHERTYPE", "PROTOCOL", "PORTS", "REMOTE")
	for _, r := range g.Spec.Rules {
		ports := "all"
		if r.PortMin > 0 {
			ports = strconv.Itoa(r.PortMin) + "-" + strconv.Itoa(r.PortMax)
		}
		remote := "anywhere"
		if r.RemoteCIDR != "" {
			remote = r.RemoteCIDR
		}
		if r.RemoteGroup != "" {
			remote = "group " + r.RemoteGroup
		}
		row(tw, r.ID, r.Direction, r.EtherType, r.Protocol, ports, remote)
	}
}

func (a *app) secgroupListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List security groups",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			groups, err := c.ListSecurityGroups(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.SecurityGroup]{Items: nonNil(groups)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "RULES", "DESCRIPTION", "AGE")
				for _, g := range groups {
					row(tw, g.Name, len(g.Spec.Rules), orDash(g.Spec.Description), age(g.CreatedAt))
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	allProjectsFlag(cmd, &opts, "security groups")
	return cmd
}

func (a *app) secgroupShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a security group and its rules",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			g, err := c.GetSecurityGroup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), g, func(tw *tabwriter.Writer) { describeGroup(tw, g) })
		},
	}
}

func (a *app) secgroupCreateCommand() *cobra.Command {
	var req api.SecurityGroupCreate
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a security group (with no rule: nothing in, nothing out)",
		Example: "  polyvisor secgroup create web --description 'web servers'\n  polyvisor secgroup rule add web --protocol tcp --port 443",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			c, _, err := a.client()
			if err != nil {
				return err
			}
			g, err := c.CreateSecurityGroup(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), g, func(tw *tabwriter.Writer) { describeGroup(tw, g) })
		},
	}
	cmd.Flags().StringVar(&req.Description, "description", "", "what the group is for")
	cmd.Flags().Var(labelsValue{&req.Labels}, "label", "add a label (repeatable)")
	return cmd
}

func (a *app) secgroupDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a security group no port uses",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteSecurityGroup(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.deleted(cmd, "security-group", args[0], projectInForce(cfg))
		},
	}
}

// parsePorts reads --port: "22" or "8000-8080".
func parsePorts(s string) (lo, hi int, err error) {
	a, b, ranged := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(strings.TrimSpace(a)); err != nil {
		return 0, 0, usagef("--port: %q is not a port or PORT-PORT", s)
	}
	hi = lo
	if ranged {
		if hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil {
			return 0, 0, usagef("--port: %q is not a port or PORT-PORT", s)
		}
	}
	return lo, hi, nil
}

func (a *app) ruleAddCommand() *cobra.Command {
	var r api.SecurityGroupRule
	var ports string
	var egress bool
	cmd := &cobra.Command{
		Use:   "add GROUP",
		Short: "Add a rule to a security group (ingress unless --egress)",
		Example: "  polyvisor secgroup rule add web --protocol tcp --port 443\n" +
			"  polyvisor secgroup rule add db --protocol tcp --port 5432 --remote-group web\n" +
			"  polyvisor secgroup rule add web --protocol icmp --remote-cidr 10.0.0.0/8",
		Args: exactArgs(1, "GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.Direction = api.DirectionIngress
			if egress {
				r.Direction = api.DirectionEgress
			}
			if ports != "" {
				var err error
				if r.PortMin, r.PortMax, err = parsePorts(ports); err != nil {
					return err
				}
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			g, err := c.AddSecurityGroupRules(cmd.Context(), args[0], []api.SecurityGroupRule{r})
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), g, func(tw *tabwriter.Writer) { describeGroup(tw, g) })
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&egress, "egress", false, "a rule for what leaves the ports (default: what reaches them)")
	fl.StringVar(&r.EtherType, "ethertype", "", "IPv4 (default) or IPv6")
	fl.StringVar(&r.Protocol, "protocol", "", "any (default), tcp, udp or icmp")
	fl.StringVar(&ports, "port", "", "with tcp or udp: the destination port, or PORT-PORT")
	fl.StringVar(&r.RemoteCIDR, "remote-cidr", "", "where the traffic comes from (or goes to, with --egress)")
	fl.StringVar(&r.RemoteGroup, "remote-group", "", "a group of the project whose ports the traffic comes from (or goes to)")
	return cmd
}

func (a *app) ruleRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "remove GROUP RULE",
		Aliases: []string{"rm"},
		Short:   "Remove a rule of a security group, by its id (secgroup show lists them)",
		Args:    exactArgs(2, "GROUP", "RULE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			g, err := c.RemoveSecurityGroupRule(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), g, func(tw *tabwriter.Writer) { describeGroup(tw, g) })
		},
	}
}
