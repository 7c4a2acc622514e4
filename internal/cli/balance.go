package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func (a *app) balanceCommand() *cobra.Command {
	cmd := group("balance", "Balance the load of the hosts by live migration (DRS; superadmin)")
	cmd.Long = "The balancer moves running VMs between Polyvisor's hosts to remove hotspots (a\n" +
		"host past the hotspot threshold of its CPU or memory) and imbalance (an uneven\n" +
		"spread of load), and in power-saving mode empties lightly loaded hosts. It is off\n" +
		"by default; in advise mode it keeps recommendations that `balance apply` carries\n" +
		"out one by one; in automatic mode it migrates VMs itself, within a move budget per\n" +
		"cycle. See docs/PLANNING.md."
	cmd.AddCommand(a.balanceShowCommand(), a.balanceSetCommand(), a.balanceApplyCommand())
	return cmd
}

// writeBalance writes the balancer's state for people.
func writeBalance(tw *tabwriter.Writer, b *api.Balance) {
	s := b.Settings
	row(tw, "Mode:", s.Mode)
	row(tw, "Aggressiveness:", fmt.Sprintf("%d of 5", s.Aggressiveness))
	row(tw, "Moves per cycle:", s.MaxMoves)
	row(tw, "Interval:", (time.Duration(s.IntervalSeconds) * time.Second).String())
	row(tw, "Cooldown:", (time.Duration(s.CooldownSeconds) * time.Second).String())
	row(tw, "Hotspot threshold:", fmt.Sprintf("%.0f%%", s.HotspotThreshold*100))
	row(tw, "Power saving:", s.PowerSaving)
	if c := b.LastCycle; c != nil {
		row(tw, "Last cycle:", fmt.Sprintf("%s (%s), spread %.1f%% -> %.1f%%, demand measured for %d of %d VMs",
			c.At.Local().Format(time.DateTime), c.Mode, c.Imbalance*100, c.ImbalanceAfter*100, c.Measured, c.VMs))
		for _, n := range c.Notes {
			row(tw, "Note:", n)
		}
		if len(c.Hosts) > 0 {
			fmt.Fprintln(tw)
			fmt.Fprintln(tw, "HOST\tCPU\tMEMORY\tVMS\tEXCLUDED")
			for _, h := range c.Hosts {
				fmt.Fprintf(tw, "%s\t%.0f%%\t%.0f%%\t%d\t%s\n", h.Name, h.Load.CPU*100, h.Load.Memory*100, h.VMs, dash(h.Excluded))
			}
		}
	}
	fmt.Fprintln(tw)
	if len(b.Recommendations) == 0 {
		fmt.Fprintln(tw, "No recommendations.")
		return
	}
	fmt.Fprintln(tw, "ID\tVM\tFROM\tTO\tKIND\tGAIN\tOPERATION\tREASON")
	for _, m := range b.Recommendations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.3f\t%s\t%s\n", m.ID, m.VM, m.From, m.To, m.Kind, m.Gain, dash(m.Operation), m.Reason)
	}
}

func (a *app) balanceShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Aliases: []string{"get"},
		Short:   "Show the mode, the last cycle and the recommended moves",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			b, err := c.Balance(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), b, func(tw *tabwriter.Writer) { writeBalance(tw, b) })
		},
	}
}

func (a *app) balanceSetCommand() *cobra.Command {
	var mode string
	var aggr, moves int
	var interval, cooldown time.Duration
	var threshold float64
	var power bool
	cmd := &cobra.Command{
		Use:   "set [flags]",
		Short: "Change the balancer's mode or tuning; the rest stays as it is",
		Long: "Change the balancer's settings. --mode off stops it; advise keeps\n" +
			"recommendations; automatic carries them out as live migrations. A cycle runs at\n" +
			"once with the new settings, then one every --interval. The change is in the\n" +
			"audit log.",
		Example: "  polyvisor balance set --mode advise\n" +
			"  polyvisor balance set --mode automatic --aggressiveness 4 --max-moves 2 --interval 5m",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			changed := false
			for _, f := range []string{"mode", "aggressiveness", "max-moves", "interval", "cooldown", "hotspot-threshold", "power-saving"} {
				changed = changed || fl.Changed(f)
			}
			if !changed {
				return usagef("give at least one of --mode, --aggressiveness, --max-moves, --interval, --cooldown, --hotspot-threshold, --power-saving")
			}
			if fl.Changed("interval") && (interval < time.Second || interval%time.Second != 0) {
				return usagef("--interval: must be whole seconds, at least 1s, not %s", interval)
			}
			if fl.Changed("cooldown") && (cooldown < 0 || cooldown%time.Second != 0) {
				return usagef("--cooldown: must be whole seconds, not %s", cooldown)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			cur, err := c.Balance(cmd.Context())
			if err != nil {
				return err
			}
			set := cur.Settings
			if fl.Changed("mode") {
				set.Mode = mode
			}
			if fl.Changed("aggressiveness") {
				set.Aggressiveness = aggr
			}
			if fl.Changed("max-moves") {
				set.MaxMoves = moves
			}
			if fl.Changed("interval") {
				set.IntervalSeconds = int(interval / time.Second)
			}
			if fl.Changed("cooldown") {
				set.CooldownSeconds = int(cooldown / time.Second)
			}
			if fl.Changed("hotspot-threshold") {
				set.HotspotThreshold = threshold
			}
			if fl.Changed("power-saving") {
				set.PowerSaving = power
			}
			out, err := c.SetBalance(cmd.Context(), set)
			if err != nil {
				return settingsFlagError(err, map[string]string{
					"mode": "--mode", "aggressiveness": "--aggressiveness", "maxMoves": "--max-moves",
					"intervalSeconds": "--interval", "cooldownSeconds": "--cooldown", "hotspotThreshold": "--hotspot-threshold",
				})
			}
			return a.print(cmd.OutOrStdout(), out, func(tw *tabwriter.Writer) { writeBalance(tw, out) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&mode, "mode", "", "off, advise or automatic")
	fl.IntVar(&aggr, "aggressiveness", 0, "1 (hotspots only) to 5 (acts on a small imbalance)")
	fl.IntVar(&moves, "max-moves", 0, "moves of one cycle at most")
	fl.DurationVar(&interval, "interval", 0, "time between cycles, e.g. 5m")
	fl.DurationVar(&cooldown, "cooldown", 0, "how long a VM that moved stays where it is, e.g. 1h")
	fl.Float64Var(&threshold, "hotspot-threshold", 0, "share of a host's CPU or memory above which it is a hotspot, e.g. 0.8")
	fl.BoolVar(&power, "power-saving", false, "also empty lightly loaded hosts so they can be powered off")
	return cmd
}

func (a *app) balanceApplyCommand() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "apply ID",
		Short: "Carry out one recommended move (a live migration)",
		Long: "Start the live migration a recommendation names (its ID from `balance show`) and\n" +
			"wait for it unless --no-wait. A recommendation whose VM has moved or is busy\n" +
			"since is refused; the next cycle recommends again.",
		Example: "  polyvisor balance apply 3f9a1c2b7d40",
		Args:    exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.ApplyBalanceRecommendation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.finish(cmd, c, op, noWait)
		},
	}
	addNoWait(cmd, &noWait)
	return cmd
}
