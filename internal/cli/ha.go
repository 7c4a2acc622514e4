package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// vmHACommand sets a VM's HA policy (docs/HA.md).
func (a *app) vmHACommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ha NAME restart|none",
		Short: "Set whether a VM is restarted on another host when its host is lost",
		Long: "Set a VM's HA policy. restart: when the VM's host stops heartbeating, its agent\n" +
			"kills the VM after T_fence, and the server, after T_fence and a margin (or a\n" +
			"fence hook's success), restarts it on another host. Only a VM whose disks are\n" +
			"all volumes of a shared pool can have it. none: the VM waits for its host.",
		Example: "  polyvisor vm ha web1 restart\n  polyvisor vm ha web1 none",
		Args:    exactArgs(2, "NAME", "POLICY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[1] != api.HARestart && args[1] != api.HANone {
				return usagef("POLICY: must be restart or none, not %q", args[1])
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			vm, err := c.SetVMHA(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), vm, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "VM %s: ha %s\n", vm.Name, haPolicy(vm.Spec.HA))
			})
		},
	}
}

// haPolicy names an HA policy, none when empty.
func haPolicy(p string) string {
	if p == "" {
		return api.HANone
	}
	return p
}

// describeHA adds a VM's HA rows.
func describeHA(tw *tabwriter.Writer, s api.VMSpec) {
	row(tw, "HA:", haPolicy(s.HA))
	if r := s.HARestart; r != nil {
		row(tw, "  Restarted:", fmt.Sprintf("from %s to %s at %s (operation %s)", r.From, r.To, r.At.Local().Format(time.RFC3339), r.Operation))
	}
}

// describeFence adds a host's fencing rows.
func describeFence(tw *tabwriter.Writer, h *api.Host) {
	if h.Provider != nil {
		return
	}
	t := "off"
	if h.FenceTimeoutMS > 0 {
		t = (time.Duration(h.FenceTimeoutMS) * time.Millisecond).String()
	}
	row(tw, "T_fence:", t)
	if k := h.Status.Keeper; k != nil {
		ks := "not armed"
		if k.Armed {
			ks = "armed"
		}
		if k.Message != "" {
			ks += " (" + k.Message + ")"
		}
		if !k.LastFired.IsZero() {
			ks += "; last fired " + k.LastFired.Local().Format(time.RFC3339)
		}
		row(tw, "Keeper:", ks)
	}
	f := h.Fence
	if f == nil {
		return
	}
	s := f.State
	switch f.State {
	case api.FencePending:
		s += fmt.Sprintf(" (silent since %s; HA vms restart elsewhere once the fence hook reports it off, or from %s if its keeper was armed)", f.LastHeartbeat.Local().Format(time.RFC3339), f.Deadline.Local().Format(time.RFC3339))
	case api.FenceUnknown:
		s += fmt.Sprintf(" (silent since %s, not known to be powered off: its HA vms are NOT restarted elsewhere; power it off and run the fence hook)", f.LastHeartbeat.Local().Format(time.RFC3339))
	case api.FenceFenced, api.FenceReturned:
		s += fmt.Sprintf(" (by %s at %s", f.By, f.FencedAt.Local().Format(time.RFC3339))
		if !f.ReturnedAt.IsZero() {
			s += ", back at " + f.ReturnedAt.Local().Format(time.RFC3339)
		}
		s += ")"
	}
	row(tw, "Fencing:", s)
	if f.Hook != "" {
		row(tw, "  Hook:", f.Hook)
	}
	for _, vm := range f.VMs {
		row(tw, "  Restarted:", vm)
	}
}
