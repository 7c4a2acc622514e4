package cli

import (
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// portIPs lists a port's addresses.
func portIPs(p *api.Port) string {
	var ips []string
	for _, f := range p.Spec.FixedIPs {
		ips = append(ips, f.IP)
	}
	return strings.Join(ips, ",")
}

func (a *app) portCommand() *cobra.Command {
	cmd := group("port", "Manage ports: VM NICs' places on networks, with their MACs, addresses and security groups", "ports")
	cmd.AddCommand(a.portListCommand(), a.portShowCommand(), a.portCreateCommand(), a.portUpdateCommand(), a.portDeleteCommand())
	return cmd
}

func (a *app) portListCommand() *cobra.Command {
	var opts client.NetworkListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List ports",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts.ListOptions); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ports, err := c.ListPorts(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Port]{Items: nonNil(ports)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "NETWORK", "MAC", "IPS", "GROUPS", "VM", "HOST", "STATE", "AGE")
				for _, p := range ports {
					row(tw, p.Name, p.Spec.Network, p.Spec.MAC, orDash(portIPs(&p)), orDash(strings.Join(p.Spec.SecurityGroups, ",")),
						orDash(p.Spec.VM), orDash(p.Status.Host), orDash(p.Status.State), age(p.CreatedAt))
				}
			})
		},
	}
	addListFlags(cmd, &opts.ListOptions)
	cmd.Flags().StringVar(&opts.Network, "network", "", "only this network's ports")
	cmd.Flags().StringVar(&opts.VM, "vm", "", "only this VM's ports")
	allProjectsFlag(cmd, &opts.ListOptions, "ports")
	return cmd
}

// describePort writes a port's details.
func describePort(tw *tabwriter.Writer, p *api.Port) {
	row(tw, "Name:", p.Name)
	row(tw, "Network:", p.Spec.Network)
	row(tw, "MAC:", p.Spec.MAC)
	for i, f := range p.Spec.FixedIPs {
		row(tw, label("IPs:", i), f.IP+" (subnet "+f.Subnet+")")
	}
	row(tw, "Security groups:", orDash(strings.Join(p.Spec.SecurityGroups, ", ")))
	row(tw, "Port security:", yesNo(p.Spec.PortSecurity == nil || *p.Spec.PortSecurity))
	vm := "-"
	if p.Spec.VM != "" {
		vm = p.Spec.VM + " (NIC " + strconv.Itoa(p.Spec.NIC) + ")"
		if p.Spec.DeleteWithVM {
			vm += ", deleted with it"
		}
	}
	row(tw, "VM:", vm)
	row(tw, "Host:", orDash(p.Status.Host))
	row(tw, "State:", orDash(p.Status.State))
	if p.Status.Message != "" {
		row(tw, "Message:", p.Status.Message)
	}
	row(tw, "Labels:", labels(p.Labels))
}

func (a *app) portShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a port",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.GetPort(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describePort(tw, p) })
		},
	}
}

// portSecurityFlags are the security flags of port create and update.
type portSecurityFlags struct {
	groups []string
	off    bool
	on     bool
}

func (f *portSecurityFlags) register(cmd *cobra.Command, update bool) {
	fl := cmd.Flags()
	fl.StringSliceVar(&f.groups, "secgroup", nil, "a security group of the project (repeatable; default the project's default group)")
	fl.BoolVar(&f.off, "no-port-security", false, "neither anti-spoofing nor security groups on the port")
	if update {
		fl.BoolVar(&f.on, "port-security", false, "turn port security back on")
	}
}

func (a *app) portCreateCommand() *cobra.Command {
	var req api.PortCreate
	var ips []string
	var sec portSecurityFlags
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a port on a network, for a VM's NIC to name",
		Example: "  polyvisor port create db1 --network web --ip 10.0.0.20 --secgroup db",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			for _, ip := range ips {
				subnet, addr, ok := strings.Cut(ip, ":")
				if !ok || strings.Contains(addr, ":") {
					subnet, addr = "", ip // an address alone (IPv6 included)
				}
				req.FixedIPs = append(req.FixedIPs, api.FixedIP{Subnet: subnet, IP: addr})
			}
			req.SecurityGroups = sec.groups
			if sec.off {
				off := false
				req.PortSecurity = &off
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.CreatePort(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describePort(tw, p) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Network, "network", "", "the port's network (required)")
	fl.StringVar(&req.MAC, "mac", "", "the port's MAC (default: allocated)")
	fl.StringArrayVar(&ips, "ip", nil, "a fixed address, or SUBNET: to have one allocated from a subnet (repeatable; default one of each family)")
	sec.register(cmd, false)
	fl.Var(labelsValue{&req.Labels}, "label", "add a label (repeatable)")
	return cmd
}

func (a *app) portUpdateCommand() *cobra.Command {
	var sec portSecurityFlags
	cmd := &cobra.Command{
		Use:     "update NAME",
		Short:   "Change a port's security groups or port security",
		Example: "  polyvisor port update db1 --secgroup db --secgroup default",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var upd api.PortUpdate
			if cmd.Flags().Changed("secgroup") {
				upd.SecurityGroups = &sec.groups
			}
			switch {
			case sec.on && sec.off:
				return usagef("--port-security: conflicts with --no-port-security; give one")
			case sec.on || sec.off:
				v := sec.on
				upd.PortSecurity = &v
			case upd.SecurityGroups == nil:
				return usagef("nothing to change: give --secgroup, --port-security or --no-port-security")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.UpdatePort(cmd.Context(), args[0], upd)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { describePort(tw, p) })
		},
	}
	sec.register(cmd, true)
	return cmd
}

func (a *app) portDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a port no VM uses, freeing its addresses",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeletePort(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.deleted(cmd, "port", args[0], projectInForce(cfg))
		},
	}
}

func (a *app) floatingIPCommand() *cobra.Command {
	cmd := group("floating-ip", "Manage floating IPs: addresses of external networks mapped to ports", "floating-ips", "fip")
	cmd.AddCommand(a.floatingIPListCommand(), a.floatingIPShowCommand(), a.floatingIPCreateCommand(), a.floatingIPDeleteCommand(),
		a.floatingIPAssociateCommand(), a.floatingIPDisassociateCommand())
	return cmd
}

func describeFloatingIP(tw *tabwriter.Writer, f *api.FloatingIP) {
	row(tw, "Name:", f.Name)
	row(tw, "Address:", f.Spec.Address)
	row(tw, "Network:", f.Spec.Network)
	row(tw, "Port:", orDash(f.Spec.Port))
	row(tw, "Maps to:", orDash(f.Status.FixedIP))
	row(tw, "Host:", orDash(f.Status.Host))
	row(tw, "Labels:", labels(f.Labels))
}

func (a *app) floatingIPListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List floating IPs",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			fips, err := c.ListFloatingIPs(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.FloatingIP]{Items: nonNil(fips)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "ADDRESS", "NETWORK", "PORT", "FIXED IP", "HOST", "AGE")
				for _, f := range fips {
					row(tw, f.Name, f.Spec.Address, f.Spec.Network, orDash(f.Spec.Port), orDash(f.Status.FixedIP), orDash(f.Status.Host), age(f.CreatedAt))
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	allProjectsFlag(cmd, &opts, "floating IPs")
	return cmd
}

func (a *app) floatingIPShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a floating IP",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.GetFloatingIP(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), f, func(tw *tabwriter.Writer) { describeFloatingIP(tw, f) })
		},
	}
}

func (a *app) floatingIPCreateCommand() *cobra.Command {
	var req api.FloatingIPCreate
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Allocate a floating IP of an external network, mapped to a port if one is given",
		Example: "  polyvisor floating-ip create web --network ext --port web1-nic0",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.CreateFloatingIP(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), f, func(tw *tabwriter.Writer) { describeFloatingIP(tw, f) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Network, "network", "", "the external network (its name, or PROJECT/NAME) (required)")
	fl.StringVar(&req.Address, "address", "", "the address (default: allocated)")
	fl.StringVar(&req.Port, "port", "", "map it to this port of the project")
	fl.Var(labelsValue{&req.Labels}, "label", "add a label (repeatable)")
	return cmd
}

func (a *app) floatingIPDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Release a floating IP",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteFloatingIP(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.deleted(cmd, "floating-ip", args[0], projectInForce(cfg))
		},
	}
}

func (a *app) floatingIPAssociateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "associate NAME PORT",
		Short: "Map a floating IP to a port (moving it from its port, if any)",
		Args:  exactArgs(2, "NAME", "PORT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.AssociateFloatingIP(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), f, func(tw *tabwriter.Writer) { describeFloatingIP(tw, f) })
		},
	}
}

func (a *app) floatingIPDisassociateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "disassociate NAME",
		Short: "Unmap a floating IP from its port",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.DisassociateFloatingIP(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), f, func(tw *tabwriter.Writer) { describeFloatingIP(tw, f) })
		},
	}
}
