package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) vmCommand() *cobra.Command {
	cmd := group("vm", "Manage virtual machines", "vms")
	cmd.AddCommand(
		a.vmCreateCommand(),
		a.vmListCommand(),
		a.vmShowCommand(),
		a.vmActionCommand(api.ActionStart, "Start a stopped VM"),
		a.vmActionCommand(api.ActionStop, "Stop a VM, gracefully unless --force"),
		a.vmActionCommand(api.ActionRestart, "Restart a VM"),
		a.vmActionCommand(api.ActionPause, "Pause a running VM"),
		a.vmActionCommand(api.ActionResume, "Resume a paused VM"),
		a.vmDeleteCommand(),
		a.vmConsoleCommand(),
		a.vmConsoleLogCommand(),
		a.vmReconfigureCommand(),
		a.vmMigrateCommand(),
		a.vmSnapshotCommand(),
		a.vmConsoleTicketCommand(),
		a.vmLeaseCommand(),
		a.vmNICCommand(),
		a.vmHACommand(),
		a.vmUsageCommand(),
	)
	return cmd
}

func (a *app) vmListCommand() *cobra.Command {
	var opts api.ListOptions
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAllProjects(cmd, opts); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			vms, err := listItems(cmd.Context(), opts, c.ListVMs, c.ListAllVMs)
			if err != nil {
				return err
			}
			now, leases := time.Now(), anyLease(vms)
			return a.print(cmd.OutOrStdout(), api.List[api.VM]{Items: nonNil(vms)}, func(tw *tabwriter.Writer) {
				head := []any{"NAME", "STATE", "DESIRED", "HOST", "PROVIDER", "VCPUS", "MEMORY", "IPS", "AGE"}
				if opts.AllProjects {
					head = append([]any{"PROJECT"}, head...)
				}
				if leases {
					head = append(head, "LEASE")
				}
				row(tw, head...)
				for _, vm := range vms {
					cells := []any{vm.Name, vmState(&vm), orDash(vm.Spec.PowerState), orDash(vm.Spec.Host), providerName(vm.Spec.Provider),
						vm.Spec.VCPUs, formatMiB(vm.Spec.MemoryMiB), orDash(strings.Join(vm.Status.IPs, ",")), age(vm.CreatedAt)}
					if opts.AllProjects {
						cells = append([]any{orDash(vm.Project)}, cells...)
					}
					if leases {
						cells = append(cells, leaseStatus(vm.Spec.Lease, now))
					}
					row(tw, cells...)
				}
			})
		},
	}
	addListFlags(cmd, &opts)
	cmd.Flags().StringVar(&opts.Host, "host", "", "only the VMs placed on this host")
	cmd.Flags().StringVar(&opts.State, "state", "", "only the VMs in this power state (running, stopped, paused, error...)")
	addProviderFilter(cmd, &opts, "VMs")
	allProjectsFlag(cmd, &opts, "VMs")
	return cmd
}

// addListFlags adds the flags every list command has.
func addListFlags(cmd *cobra.Command, opts *api.ListOptions) {
	cmd.Flags().StringVarP(&opts.Selector, "selector", "l", "", "label selector: k=v,k!=v,k,!k")
	cmd.Flags().IntVar(&opts.Limit, "limit", 0, "list at most this many (default: all)")
}

// addProviderFilter adds --provider to a list of VMs or hosts.
func addProviderFilter(cmd *cobra.Command, opts *api.ListOptions, what string) {
	cmd.Flags().StringVar(&opts.Provider, "provider", "", "only the "+what+" of this provider (none: only Polyvisor's own)")
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// vmState is the observed power state, or pending before the host saw it.
func vmState(vm *api.VM) string {
	if vm.Status.PowerState == "" {
		return api.PowerPending
	}
	return vm.Status.PowerState
}

func (a *app) vmShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get"},
		Short:   "Show a VM",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			vm, err := c.GetVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), vm, func(tw *tabwriter.Writer) { describeVM(tw, vm) })
		},
	}
}

// describeVM writes a VM's details.
func describeVM(tw *tabwriter.Writer, vm *api.VM) {
	s, st := vm.Spec, vm.Status
	row(tw, "Name:", vm.Name)
	if vm.Project != "" {
		row(tw, "Project:", vm.Project)
	}
	row(tw, "UID:", orDash(vm.UID))
	row(tw, "Labels:", labels(vm.Labels))
	row(tw, "Host:", orDash(s.Host))
	describeProviderRef(tw, s.Provider)
	row(tw, "State:", fmt.Sprintf("%s (desired %s)", vmState(vm), orDash(s.PowerState)))
	if st.Reason != "" {
		row(tw, "Reason:", st.Reason)
	}
	if st.StopCause != "" {
		row(tw, "Stop cause:", st.StopCause)
	}
	if s.Provider == nil {
		onCrash := s.OnCrash
		if onCrash == "" {
			onCrash = api.OnCrashRestart
		}
		row(tw, "On crash:", onCrash)
		describeHA(tw, s)
	}
	if st.Error != nil {
		row(tw, "Error:", fmt.Sprintf("%s (generation %d)", st.Error.Message, st.Error.Generation))
	}
	row(tw, "VCPUs:", s.VCPUs)
	row(tw, "Memory:", formatMiB(s.MemoryMiB))
	for i, d := range s.Disks {
		desc := "blank"
		if d.Image != "" {
			desc = "overlay of image " + d.Image
		}
		if d.SizeMiB > 0 {
			desc += ", " + formatMiB(d.SizeMiB)
		}
		row(tw, label("Disks:", i), orDash(d.Name)+": "+desc)
	}
	for i, n := range s.NICs {
		row(tw, label("NICs:", i), strconv.Itoa(i)+": "+nicText(n))
	}
	boot := "firmware, first disk"
	if s.Boot.Kernel != "" {
		boot = "kernel " + s.Boot.Kernel
		if s.Boot.Initrd != "" {
			boot += ", initrd " + s.Boot.Initrd
		}
		if s.Boot.Cmdline != "" {
			boot += ", cmdline " + fmt.Sprintf("%q", s.Boot.Cmdline)
		}
	}
	row(tw, "Boot:", boot)
	fw := s.Boot.Firmware
	if fw == "" {
		fw = api.FirmwareBIOS
	}
	row(tw, "Firmware:", fw)
	if s.CloudInit != nil {
		row(tw, "Cloud-init:", "yes")
	}
	row(tw, "IPs:", orDash(strings.Join(st.IPs, ", ")))
	if st.Driver != "" {
		row(tw, "Driver:", fmt.Sprintf("%s (pid %d)", st.Driver, st.PID))
	}
	row(tw, "Generation:", fmt.Sprintf("%d (observed %d)", vm.Generation, st.ObservedGeneration))
	if l := s.Lease; l != nil {
		row(tw, "Lease:", leaseStatus(l, time.Now()))
		row(tw, "", "ends "+l.ExpiresAt.Local().Format(time.RFC3339)+", deletion "+l.DeleteAt.Local().Format(time.RFC3339))
	}
	if s.Deletion != nil {
		row(tw, "Deleting:", when(s.Deletion.RequestedAt))
	}
	row(tw, "Started:", when(st.StartedAt))
	row(tw, "Created:", when(vm.CreatedAt))
}

// label returns the label on the first line of a list, blank after.
func label(l string, i int) string {
	if i == 0 {
		return l
	}
	return ""
}

func (a *app) vmActionCommand(action, short string) *cobra.Command {
	var noWait, force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   action + " NAME",
		Short: short,
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var stop *api.VMStop
			if timeout < 0 {
				return usagef("--timeout: must not be negative")
			}
			if force || timeout > 0 {
				stop = &api.VMStop{Force: force, TimeoutSeconds: int((timeout + time.Second - 1) / time.Second)}
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.VMAction(cmd.Context(), args[0], action, stop)
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	if action == api.ActionStop || action == api.ActionRestart {
		cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long a graceful shutdown may take before it is forced, e.g. 30s (default: the VM's stop timeout)")
		cmd.Flags().BoolVar(&force, "force", false, "skip the graceful shutdown")
	}
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) vmDeleteCommand() *cobra.Command {
	var noWait, keepDisks bool
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a VM and, unless --keep-disks, its disks",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.DeleteVM(cmd.Context(), args[0], keepDisks)
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	cmd.Flags().BoolVar(&keepDisks, "keep-disks", false, "leave the VM's disks on its host")
	addNoWait(cmd, &noWait)
	return cmd
}

func (a *app) vmConsoleLogCommand() *cobra.Command {
	var bytes int64
	var raw bool
	cmd := &cobra.Command{
		Use:   "console-log NAME",
		Short: "Print a VM's recorded serial console output",
		Long: "Print the last bytes of a VM's recorded serial console output. On a terminal,\n" +
			"control characters (escape sequences the guest wrote) are shown escaped, not\n" +
			"obeyed, unless --raw; piped or redirected, the output is the bytes as recorded.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if bytes < 0 {
				return usagef("--bytes: must not be negative")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			b, err := c.ConsoleLog(cmd.Context(), args[0], bytes)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !raw && isTerminal(out) {
				_, err = io.WriteString(out, consoleSafe(b))
				return err
			}
			_, err = out.Write(b)
			return err
		},
	}
	cmd.Flags().Int64Var(&bytes, "bytes", 0, "how many bytes from the end (default: the server's, 64 KiB)")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the bytes as recorded even on a terminal (the guest's escape sequences then act on it)")
	return cmd
}
