package cli

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

func (a *app) networkCommand() *cobra.Command {
	cmd := group("network", "Manage the project's networks (overlay, bridged) and see its providers' networks", "networks", "net")
	cmd.AddCommand(a.networkListCommand(), a.networkShowCommand(), a.networkCreateCommand(), a.networkDeleteCommand())
	return cmd
}

// deleted prints that an object was deleted.
func (a *app) deleted(cmd *cobra.Command, kind, name, project string) error {
	return a.printOutcome(cmd.OutOrStdout(), outcome{Kind: kind, Name: name, Project: project, Result: "deleted"}, "Deleted "+kind+" "+name)
}

// networkWhere says where a network's ports attach.
func networkWhere(n *api.Network) string {
	switch {
	case n.Provider != nil:
		return "provider " + n.Provider.Name
	case n.Spec.Type == api.NetworkBridged:
		return "bridge " + n.Spec.Bridge
	case n.Status.VNI > 0:
		return "vni " + strconv.Itoa(n.Status.VNI)
	}
	return "-"
}

func (a *app) networkListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the project's networks, the external networks, and the networks of its providers",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			nets, err := c.ListNetworks(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Network]{Items: nonNil(nets)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "PROJECT", "TYPE", "WHERE", "EXTERNAL", "NAT", "MTU", "PORTS", "HOSTS", "AGE")
				for i := range nets {
					n := &nets[i]
					mtu := "-"
					if n.Spec.MTU > 0 {
						mtu = strconv.Itoa(n.Spec.MTU)
					}
					row(tw, n.Name, orDash(n.Project), n.Spec.Type, networkWhere(n), yesNo(n.Spec.External), yesNo(n.Spec.NAT), mtu,
						n.Status.Ports, orDash(strings.Join(n.Status.Hosts, ",")), age(n.CreatedAt))
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	cmd.Flags().StringVar(&opts.Provider, "provider", "", "only this provider's networks (none: none of the providers')")
	allProjectsFlag(cmd, &opts, "networks")
	return cmd
}

func (a *app) networkShowCommand() *cobra.Command {
	var provider string
	cmd := &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a network with its subnets and ports",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			n, err := c.GetNetwork(cmd.Context(), args[0], provider)
			if err != nil {
				return err
			}
			var subnets []api.Subnet
			var ports []api.Port
			if n.Provider == nil {
				own := c.WithProject(n.Project)
				if subnets, err = own.ListSubnets(cmd.Context(), client.NetworkListOptions{Network: n.Name}); err != nil {
					return err
				}
				if !n.Spec.External || n.Project == c.Project() {
					if ports, err = own.ListPorts(cmd.Context(), client.NetworkListOptions{Network: n.Name}); err != nil {
						return err
					}
				}
			}
			return a.print(cmd.OutOrStdout(), n, func(tw *tabwriter.Writer) { describeNetwork(tw, n, subnets, ports) })
		},
	}
	cmd.Flags().StringVar(&provider, "provider", "", "look among this provider's networks")
	return cmd
}

// describeNetwork writes a network, its subnets and its ports.
func describeNetwork(tw *tabwriter.Writer, n *api.Network, subnets []api.Subnet, ports []api.Port) {
	row(tw, "Name:", n.Name)
	row(tw, "Project:", orDash(n.Project))
	row(tw, "Type:", n.Spec.Type)
	row(tw, "Where:", networkWhere(n))
	if n.Provider == nil {
		row(tw, "External:", yesNo(n.Spec.External))
		row(tw, "NAT:", yesNo(n.Spec.NAT))
		row(tw, "MTU:", n.Spec.MTU)
		row(tw, "Hosts:", orDash(strings.Join(n.Status.Hosts, ", ")))
	}
	row(tw, "Description:", orDash(n.Spec.Description))
	row(tw, "Labels:", labels(n.Labels))
	if n.Provider != nil {
		row(tw, "Native id:", n.Provider.ID)
		return
	}
	fmt.Fprintln(tw)
	if len(subnets) == 0 {
		fmt.Fprintln(tw, "No subnets.")
	} else {
		row(tw, "SUBNET", "CIDR", "GATEWAY", "DHCP", "USED", "DNS")
		for _, s := range subnets {
			row(tw, s.Name, s.Spec.CIDR, s.Spec.Gateway, yesNo(s.Spec.DHCP == nil || *s.Spec.DHCP), s.Status.Used, orDash(strings.Join(s.Spec.DNSServers, ",")))
		}
	}
	fmt.Fprintln(tw)
	if len(ports) == 0 {
		fmt.Fprintln(tw, "No ports.")
		return
	}
	row(tw, "PORT", "MAC", "IPS", "VM", "HOST", "STATE")
	for _, p := range ports {
		row(tw, p.Name, p.Spec.MAC, orDash(portIPs(&p)), orDash(p.Spec.VM), orDash(p.Status.Host), orDash(p.Status.State))
	}
}

func (a *app) networkCreateCommand() *cobra.Command {
	var req api.NetworkCreate
	var cidr string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a network (an overlay across the hosts by default)",
		Example: "  polyvisor network create web --cidr 10.0.0.0/24\n" +
			"  polyvisor network create ext --type bridged --bridge br-ext --external   # superadmins",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			req.Name = args[0]
			n, err := c.CreateNetwork(cmd.Context(), req)
			if err != nil {
				return err
			}
			if cidr != "" {
				if _, err := c.CreateSubnet(cmd.Context(), api.SubnetCreate{Name: n.Name + "-" + family(cidr),
					SubnetSpec: api.SubnetSpec{Network: n.Name, CIDR: cidr}}); err != nil {
					return fmt.Errorf("network %s was made, its subnet not: %w", n.Name, err)
				}
				if n, err = c.GetNetwork(cmd.Context(), n.Name, ""); err != nil {
					return err
				}
			}
			return a.print(cmd.OutOrStdout(), n, func(tw *tabwriter.Writer) { describeNetwork(tw, n, nil, nil) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Type, "type", "", "overlay (default: VXLAN across the hosts) or bridged (a bridge on every host; superadmins)")
	fl.StringVar(&req.Bridge, "bridge", "", "with --type bridged: the bridge or interface ports attach to")
	fl.BoolVar(&req.External, "external", false, "a bridged network that hands out floating IPs to every project (superadmins)")
	fl.BoolVar(&req.NAT, "nat", false, "the guests reach out through the host they run on")
	fl.IntVar(&req.MTU, "mtu", 0, "the guests' MTU (default 1450 on overlays, 1500 on bridged networks)")
	fl.StringVar(&req.Description, "description", "", "what the network is for")
	fl.Var(labelsValue{&req.Labels}, "label", "add a label (repeatable)")
	fl.StringVar(&cidr, "cidr", "", "also add a subnet of this CIDR, named NAME-v4 or NAME-v6")
	return cmd
}

// family is "v6" for an IPv6 CIDR, else "v4".
func family(cidr string) string {
	if strings.Contains(cidr, ":") {
		return "v6"
	}
	return "v4"
}

func (a *app) networkDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a network and its subnets (refused while ports use it)",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteNetwork(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.deleted(cmd, "network", args[0], projectInForce(cfg))
		},
	}
}

func (a *app) subnetCommand() *cobra.Command {
	cmd := group("subnet", "Manage the subnets of the project's networks", "subnets")
	cmd.AddCommand(a.subnetListCommand(), a.subnetShowCommand(), a.subnetCreateCommand(), a.subnetDeleteCommand())
	return cmd
}

func (a *app) subnetListCommand() *cobra.Command {
	var opts client.NetworkListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List subnets",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts.ListOptions); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			subnets, err := c.ListSubnets(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Subnet]{Items: nonNil(subnets)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "NETWORK", "CIDR", "GATEWAY", "DHCP", "USED", "AGE")
				for _, s := range subnets {
					row(tw, s.Name, s.Spec.Network, s.Spec.CIDR, s.Spec.Gateway, yesNo(s.Spec.DHCP == nil || *s.Spec.DHCP), s.Status.Used, age(s.CreatedAt))
				}
			})
		},
	}
	addListFlags(cmd, &opts.ListOptions)
	cmd.Flags().StringVar(&opts.Network, "network", "", "only this network's subnets")
	allProjectsFlag(cmd, &opts.ListOptions, "subnets")
	return cmd
}

func (a *app) subnetShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a subnet",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			s, err := c.GetSubnet(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), s, func(tw *tabwriter.Writer) {
				row(tw, "Name:", s.Name)
				row(tw, "Network:", s.Spec.Network)
				row(tw, "CIDR:", s.Spec.CIDR)
				row(tw, "Gateway:", s.Spec.Gateway)
				row(tw, "DHCP:", yesNo(s.Spec.DHCP == nil || *s.Spec.DHCP))
				for i, p := range s.Spec.Pools {
					row(tw, label("Pools:", i), p.Start+" - "+p.End)
				}
				row(tw, "DNS servers:", orDash(strings.Join(s.Spec.DNSServers, ", ")))
				for i, r := range s.Spec.Routes {
					row(tw, label("Routes:", i), r.Destination+" via "+r.NextHop)
				}
				row(tw, "Addresses used:", s.Status.Used)
				row(tw, "Labels:", labels(s.Labels))
			})
		},
	}
}

func (a *app) subnetCreateCommand() *cobra.Command {
	var req api.SubnetCreate
	var pools, routes []string
	var noDHCP bool
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Add a subnet to a network",
		Example: "  polyvisor subnet create web-v4 --network web --cidr 10.0.0.0/24 --dns 10.0.0.2 --pool 10.0.0.10-10.0.0.200",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			for _, p := range pools {
				start, end, ok := strings.Cut(p, "-")
				if !ok {
					return usagef("--pool: %q is not START-END", p)
				}
				req.Pools = append(req.Pools, api.IPRange{Start: strings.TrimSpace(start), End: strings.TrimSpace(end)})
			}
			for _, r := range routes {
				dst, via, ok := strings.Cut(r, "=")
				if !ok {
					return usagef("--route: %q is not DESTINATION=NEXTHOP", r)
				}
				req.Routes = append(req.Routes, api.Route{Destination: dst, NextHop: via})
			}
			if noDHCP {
				off := false
				req.DHCP = &off
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			s, err := c.CreateSubnet(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), s, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "NETWORK", "CIDR", "GATEWAY")
				row(tw, s.Name, s.Spec.Network, s.Spec.CIDR, s.Spec.Gateway)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Network, "network", "", "the subnet's network (required)")
	fl.StringVar(&req.CIDR, "cidr", "", "the subnet's range, e.g. 10.0.0.0/24 or fd00::/64 (required)")
	fl.StringVar(&req.Gateway, "gateway", "", "the guests' router (default the first address)")
	fl.BoolVar(&noDHCP, "no-dhcp", false, "serve no DHCP on the subnet")
	fl.StringArrayVar(&pools, "pool", nil, "allocate addresses from START-END only (repeatable)")
	fl.StringSliceVar(&req.DNSServers, "dns", nil, "a DNS server handed to guests (repeatable)")
	fl.StringArrayVar(&routes, "route", nil, "a static route DESTINATION=NEXTHOP handed to guests (repeatable)")
	fl.Var(labelsValue{&req.Labels}, "label", "add a label (repeatable)")
	return cmd
}

func (a *app) subnetDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a subnet none of whose addresses is used",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteSubnet(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.deleted(cmd, "subnet", args[0], projectInForce(cfg))
		},
	}
}
