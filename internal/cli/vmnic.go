package cli

import (
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// nicSpecHelp says how a NIC is written on the command line.
const nicSpecHelp = "NETWORK, or KEY=VALUE,... of network=NAME, ip=ADDRESS, secgroup=GROUP (repeatable), mac=MAC, port=PORT"

// parseNIC reads a NIC as the command line writes it: a network's name
// ("web", "user"), or "network=web,ip=10.0.0.5,secgroup=web,secgroup=db",
// or "port=db1".
func parseNIC(flag, s string) (api.NIC, error) {
	var nic api.NIC
	if !strings.Contains(s, "=") {
		nic.Network = strings.TrimSpace(s)
		if nic.Network == "" {
			return nic, usagef("%s: empty network name", flag)
		}
		return nic, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !ok || v == "" {
			return nic, usagef("%s: %q is not KEY=VALUE (%s)", flag, part, nicSpecHelp)
		}
		dup := func(cur string) error {
			if cur != "" {
				return usagef("%s: %s is given twice", flag, k)
			}
			return nil
		}
		var err error
		switch k {
		case "network", "net":
			err, nic.Network = dup(nic.Network), v
		case "ip", "address":
			err, nic.IP = dup(nic.IP), v
		case "mac":
			err, nic.MAC = dup(nic.MAC), v
		case "port":
			err, nic.Port = dup(nic.Port), v
		case "secgroup", "security-group", "sg":
			nic.SecurityGroups = append(nic.SecurityGroups, v)
		default:
			return nic, usagef("%s: unknown key %q (%s)", flag, k, nicSpecHelp)
		}
		if err != nil {
			return nic, err
		}
	}
	if nic.Network == "" && nic.Port == "" {
		return nic, usagef("%s: %q names neither a network nor a port", flag, s)
	}
	return nic, nil
}

func (a *app) vmNICCommand() *cobra.Command {
	cmd := group("nic", "Add and remove the NICs of a VM (hot plugged while it runs)", "nics")
	cmd.AddCommand(a.vmNICAddCommand(), a.vmNICRemoveCommand())
	return cmd
}

func (a *app) vmNICAddCommand() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:     "add VM NIC",
		Short:   "Add a NIC on a network of the project (or on a port) to a VM",
		Example: "  polyvisor vm nic add web1 network=db,ip=10.1.0.5,secgroup=db\n  polyvisor vm nic add web1 port=spare",
		Args:    exactArgs(2, "VM", "NIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			nic, err := parseNIC("NIC", args[1])
			if err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.AddNIC(cmd.Context(), args[0], nic)
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) vmNICRemoveCommand() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:     "remove VM INDEX",
		Aliases: []string{"rm"},
		Short:   "Remove a VM's NIC by its index (vm show lists them); the port made for it goes too",
		Args:    exactArgs(2, "VM", "INDEX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			i, err := strconv.Atoi(args[1])
			if err != nil || i < 0 {
				return usagef("INDEX: %q is not the index of a NIC (0, 1, ...)", args[1])
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.RemoveNIC(cmd.Context(), args[0], i)
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}

// nicText writes a VM's NIC for people.
func nicText(n api.NIC) string {
	s := n.Network + " " + orDash(n.MAC)
	if n.IP != "" {
		s += " " + n.IP
	}
	if n.Port != "" {
		s += " (port " + n.Port
		if len(n.SecurityGroups) > 0 {
			s += ", groups " + strings.Join(n.SecurityGroups, ",")
		}
		s += ")"
	}
	return s
}
