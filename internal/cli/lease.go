package cli

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// parseDuration reads a duration as Go writes them (90m, 72h, 1h30m) or a
// whole number of days (7d).
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(t, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("duration %q: want a whole number of days (7d) or a duration such as 72h or 90m", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a duration such as 72h, 90m or 7d", s)
	}
	return d, nil
}

// durationValue is a flag holding a non-negative duration that may be
// written in days.
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil || *v.d == 0 {
		return ""
	}
	return shortDuration(*v.d)
}
func (v durationValue) Type() string { return "duration" }
func (v durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("duration %q: must not be negative", s)
	}
	*v.d = d
	return nil
}

// seconds rounds a duration up to whole seconds.
func seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// shortDuration writes a duration the way people read a countdown: 45s,
// 12m, 5h, 71h59m under a hundred hours, 4d, 30d12h beyond. Parts below
// the last unit shown are dropped, not rounded.
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Minute {
		return fmt.Sprintf("%ds", int64(d/time.Second))
	}
	if d < 100*time.Hour {
		h, m := int64(d/time.Hour), int64(d%time.Hour/time.Minute)
		switch {
		case h == 0:
			return fmt.Sprintf("%dm", m)
		case m == 0:
			return fmt.Sprintf("%dh", h)
		default:
			return fmt.Sprintf("%dh%dm", h, m)
		}
	}
	days, h := int64(d/(24*time.Hour)), int64(d%(24*time.Hour)/time.Hour)
	if h == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%dh", days, h)
}

// leaseStatus is a VM lease's countdown at now: "expires in 71h59m,
// deleted 24h later" before it ends, "expired, stopped; deleted in 23h"
// after.
func leaseStatus(l *api.Lease, now time.Time) string {
	if l == nil {
		return "-"
	}
	if now.Before(l.ExpiresAt) {
		return fmt.Sprintf("expires in %s, deleted %s later", shortDuration(l.ExpiresAt.Sub(now)), shortDuration(l.DeleteAt.Sub(l.ExpiresAt)))
	}
	state := "stopping"
	if !l.StoppedAt.IsZero() {
		state = "stopped"
	}
	if now.Before(l.DeleteAt) {
		return fmt.Sprintf("expired, %s; deleted in %s", state, shortDuration(l.DeleteAt.Sub(now)))
	}
	return fmt.Sprintf("expired, %s; being deleted", state)
}

// anyLease tells whether one of the VMs has a lease.
func anyLease(vms []api.VM) bool {
	for _, vm := range vms {
		if vm.Spec.Lease != nil {
			return true
		}
	}
	return false
}

func (a *app) vmLeaseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "lease NAME DURATION",
		Short: "Renew a VM's lease to end DURATION from now (0 removes it)",
		Long: "Renew a VM's lease: it then expires DURATION from now (72h, 90m, 7d), within\n" +
			"the project's maximum lease. An expired VM is stopped, then deleted after the\n" +
			"project's grace period. A DURATION of 0 removes the lease, where the project\n" +
			"allows VMs without one.",
		Example: "  polyvisor vm lease web1 72h\n  polyvisor vm lease web1 0",
		Args:    exactArgs(2, "NAME", "DURATION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDuration(args[1])
			if err != nil {
				return usagef("DURATION: %v", err)
			}
			if d < 0 {
				return usagef("DURATION: %q must not be negative", args[1])
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			vm, err := c.SetLease(cmd.Context(), args[0], time.Duration(seconds(d))*time.Second)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), vm, func(tw *tabwriter.Writer) {
				if vm.Spec.Lease == nil {
					fmt.Fprintf(tw, "VM %s has no lease\n", vm.Name)
					return
				}
				fmt.Fprintf(tw, "VM %s %s (at %s)\n", vm.Name, leaseStatus(vm.Spec.Lease, time.Now()),
					vm.Spec.Lease.ExpiresAt.Local().Format(time.RFC3339))
			})
		},
	}
}

// allProjectsFlag adds --all-projects to a list command.
func allProjectsFlag(cmd *cobra.Command, opts *api.ListOptions, what string) {
	cmd.Flags().BoolVar(&opts.AllProjects, "all-projects", false, "list the "+what+" of every project you may read, with their project")
}

// checkAllProjects refuses --all-projects with an explicit --project.
func checkAllProjects(cmd *cobra.Command, opts api.ListOptions) error {
	if opts.AllProjects && projectGiven(cmd) {
		return usagef("--all-projects: conflicts with --project; give one")
	}
	return nil
}
