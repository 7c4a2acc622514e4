package cli

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) hostCommand() *cobra.Command {
	cmd := group("host", "Manage the hosts that run VMs", "hosts")
	cmd.AddCommand(a.hostListCommand(), a.hostShowCommand(), a.hostJoinTokenCommand())
	cmd.AddCommand(a.hostAdminCommands()...)
	cmd.AddCommand(a.hostDrainCommand())
	cmd.AddCommand(a.hostUsageCommand())
	return cmd
}

func (a *app) hostListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List hosts",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			hosts, err := listItems(cmd.Context(), opts, c.ListHosts, c.ListAllHosts)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), api.List[api.Host]{Items: nonNil(hosts)}, func(tw *tabwriter.Writer) {
				row(tw, "NAME", "STATE", "PROVIDER", "ACCEL", "VMS", "VCPUS", "MEMORY", "DISK FREE", "HEARTBEAT")
				for _, h := range hosts {
					st := h.Status
					row(tw, h.Name, hostState(&h), providerName(h.Provider), orDash(st.Accel), st.Allocated.VMs,
						fmt.Sprintf("%d/%d", st.Allocated.VCPUs, st.CPUs),
						formatMiB(st.Allocated.MemoryMiB)+"/"+formatMiB(st.MemoryMiB),
						formatMiB(st.DiskFreeMiB), age(st.LastHeartbeat))
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	addProviderFilter(cmd, &opts, "hosts")
	return cmd
}

// hostState is the host's state, marked when it takes no new VMs.
func hostState(h *api.Host) string {
	s := orDash(h.Status.State)
	if h.Spec.Unschedulable {
		s += ",unschedulable"
	}
	return s
}

func (a *app) hostShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a host",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			h, err := c.GetHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), h, func(tw *tabwriter.Writer) {
				st := h.Status
				row(tw, "Name:", h.Name)
				row(tw, "Labels:", labels(h.Labels))
				row(tw, "State:", hostState(h))
				describeFence(tw, h)
				describeProviderRef(tw, h.Provider)
				row(tw, "Address:", orDash(st.Address))
				row(tw, "Accelerator:", orDash(st.Accel))
				if st.AccelReason != "" {
					row(tw, "  Because:", st.AccelReason)
				}
				row(tw, "CPUs:", fmt.Sprintf("%d (%d vCPUs allocated of %d schedulable)", st.CPUs, st.Allocated.VCPUs, st.Capacity.VCPUs))
				row(tw, "Memory:", fmt.Sprintf("%s (%s allocated of %s schedulable)", formatMiB(st.MemoryMiB), formatMiB(st.Allocated.MemoryMiB), formatMiB(st.Capacity.MemoryMiB)))
				row(tw, "Disk:", fmt.Sprintf("%s free of %s", formatMiB(st.DiskFreeMiB), formatMiB(st.DiskTotalMiB)))
				row(tw, "VMs:", st.Allocated.VMs)
				row(tw, "Drivers:", orDash(strings.Join(st.Drivers, ", ")))
				row(tw, "QEMU:", orDash(st.QEMUVersion))
				if c := st.Confinement; c != nil {
					row(tw, "Confinement:", fmt.Sprintf("user %s, sandbox %s, cgroups %s", orDash(c.User), orDash(c.Sandbox), orDash(c.Cgroups)))
					row(tw, "  Network:", orDash(c.Network))
					for _, n := range c.Notes {
						row(tw, "  Not confined:", n)
					}
				}
				row(tw, "Agent:", orDash(st.AgentVersion))
				row(tw, "Heartbeat:", when(st.LastHeartbeat))
				for _, w := range st.Warnings {
					row(tw, "Warning:", w)
				}
				row(tw, "Registered:", when(h.CreatedAt))
			})
		},
	}
}

func (a *app) hostJoinTokenCommand() *cobra.Command {
	var ttl time.Duration
	var host string
	cmd := &cobra.Command{
		Use:   "join-token [--host NAME]",
		Short: "Make a single-use token for a new host to join, and print its command",
		Long: "Make a single-use join token. Without --host it joins a new host, or one\n" +
			"revoked or deleted; with --host it joins that host name only, and may join\n" +
			"again a host that exists and still holds credentials (its agent lost them).",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < time.Second {
				return usagef("--ttl: must be at least 1s")
			}
			c, cfg, err := a.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateJoinToken(cmd.Context(), api.JoinTokenCreate{TTLSeconds: int(ttl / time.Second), Host: host})
			if err != nil {
				return err
			}
			server, note := joinServerURL(tok.ServerURL, cfg.Server)
			return a.print(cmd.OutOrStdout(), tok, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "Join token (single use, expires %s; it is not shown again):\n\n  %s\n\n",
					tok.ExpiresAt.Local().Format(time.RFC3339), tok.Token)
				if tok.CAFingerprint != "" {
					fmt.Fprintf(tw, "Server CA fingerprint (SHA-256): %s\n\n", tok.CAFingerprint)
				}
				if tok.Host != "" {
					fmt.Fprintf(tw, "Run on host %s (the token joins that name only):\n\n  polyvisor agent --server %s --join-token %s --name %s\n", tok.Host, server, tok.Token, tok.Host)
				} else {
					fmt.Fprintf(tw, "Run on the new host:\n\n  polyvisor agent --server %s --join-token %s\n", server, tok.Token)
				}
				if note != "" {
					fmt.Fprintf(tw, "\n%s\n", note)
				}
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays valid")
	cmd.Flags().StringVar(&host, "host", "", "bind the token to this host `name`: to join it again while it holds credentials")
	return cmd
}

// joinServerURL is the server URL to give a new host's agent: the one the
// server advertises, else the https URL the CLI used; with a note when the
// agent of another machine may not reach it.
func joinServerURL(advertised, used string) (server, note string) {
	server = advertised
	if server == "" && strings.HasPrefix(used, "https://") {
		server = used
	}
	if server == "" {
		return "https://SERVER:7443", "The server does not listen on TCP (its --listen is empty): restart it with --listen :7443, " +
			"and put its address in place of SERVER."
	}
	if u, err := url.Parse(server); err == nil {
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			note = fmt.Sprintf("The server is reached at %s, a loopback address: an agent on another machine cannot use it. "+
				"Restart the server with --listen :%s --advertise-address NAME, NAME being how other machines reach it.", u.Host, orDash(u.Port()))
		}
	}
	return server, note
}
