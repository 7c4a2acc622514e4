package cli

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// capacityFlags are the flags every plan command takes.
type capacityFlags struct {
	target, percentile float64
	rvtools            string
	poweredOff         bool
	crossProvider      bool
}

func (f *capacityFlags) add(cmd *cobra.Command, defaultTarget string) {
	fl := cmd.Flags()
	fl.Float64Var(&f.target, "target-utilization", 0, "the fraction of a host's CPU and memory a plan may fill, in (0, 1] (default "+defaultTarget+")")
	fl.Float64Var(&f.percentile, "percentile", 0, "size each VM at this percentile of its demand history, in (0, 100] (default 95)")
	fl.StringVar(&f.rvtools, "rvtools", "", "plan the estate of this RVTools export (.xlsx) instead of the live one")
	fl.BoolVar(&f.poweredOff, "include-powered-off", false, "with --rvtools: plan powered-off VMs too, at their allocation")
	fl.BoolVar(&f.crossProvider, "cross-provider", false, "let VMs be planned onto hosts of another provider")
}

// request builds the plan request and reads the workbook, if any.
func (f *capacityFlags) request(cmd *cobra.Command) (api.PlanRequest, []byte, error) {
	req := api.PlanRequest{
		Options:           api.PlanOptions{TargetUtilization: f.target, Percentile: f.percentile, CrossProvider: f.crossProvider},
		IncludePoweredOff: f.poweredOff,
	}
	if cmd.Flags().Changed("target-utilization") && (f.target <= 0 || f.target > 1) {
		return req, nil, usagef("--target-utilization must be in (0, 1], not %v", f.target)
	}
	if cmd.Flags().Changed("percentile") && (f.percentile <= 0 || f.percentile > 100) {
		return req, nil, usagef("--percentile must be in (0, 100], not %v", f.percentile)
	}
	if f.poweredOff && f.rvtools == "" {
		return req, nil, usagef("--include-powered-off applies with --rvtools only")
	}
	if f.rvtools == "" {
		return req, nil, nil
	}
	b, err := os.ReadFile(f.rvtools)
	if err != nil {
		return req, nil, fmt.Errorf("read --rvtools: %w", err)
	}
	return req, b, nil
}

func (a *app) planCommand() *cobra.Command {
	cmd := group("plan", "Plan capacity: consolidate, what-if, forecast (superadmin)")
	cmd.AddCommand(a.planConsolidateCommand(), a.planWhatIfCommand(), a.planForecastCommand())
	return cmd
}

func (a *app) planConsolidateCommand() *cobra.Command {
	var f capacityFlags
	cmd := &cobra.Command{
		Use:   "consolidate [--target-utilization 0.8] [--percentile 95] [--rvtools FILE]",
		Short: "The fewest hosts that hold the estate, where each VM goes, and the moves",
		Long: "Plan the estate onto the fewest hosts at the target utilization: each VM sized at\n" +
			"a percentile of its demand (its allocation when none is known), never breaking\n" +
			"cordons, pins, providers, affinity or anti-affinity. Shows each host before and\n" +
			"after, the VMs that move, and the hosts freed. Changes nothing.",
		Example: "  polyvisor plan consolidate --target-utilization 0.75\n  polyvisor plan consolidate --rvtools estate.xlsx -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, wb, err := f.request(cmd)
			if err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.PlanConsolidate(cmd.Context(), req, wb)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { printCapacityPlan(tw, p, true) })
		},
	}
	f.add(cmd, "0.8")
	return cmd
}

func printCapacityPlan(tw *tabwriter.Writer, p *api.Plan, detail bool) {
	for _, w := range p.Warnings {
		fmt.Fprintf(tw, "Note: %s\n", w)
	}
	fmt.Fprintf(tw, "Hosts: %d now, %d planned (no plan can use fewer than %d), at %s target utilization, VMs sized at p%s\n",
		p.HostsBefore, p.HostsAfter, p.LowerBound, num(p.Options.TargetUtilization*100)+"%", num(p.Options.Percentile))
	fmt.Fprintf(tw, "Saves: %d host(s) empty, %s cores, %s; %d VM(s) move\n",
		p.Savings.Hosts, num(p.Savings.CPUs), formatMiB(int64(p.Savings.MemoryMiB)), len(p.Moves))
	if !detail {
		return
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "HOST\tCLUSTER\tCAPACITY\tBEFORE\tAFTER\tVMS\tPLAN")
	for _, h := range p.Hosts {
		state := "keep"
		switch {
		case h.Cordoned:
			state = "cordoned"
		case h.VMsAfter == 0 && h.VMsBefore > 0:
			state = "free"
		case h.VMsAfter == 0:
			state = "idle"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d→%d\t%s\n", h.Name, dash(h.Cluster), usage(h.Capacity), usage(h.Before), usage(h.After), h.VMsBefore, h.VMsAfter, state)
	}
	if len(p.Moves) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "VM\tFROM\tTO")
		for _, m := range p.Moves {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.VM, dash(m.From), m.To)
		}
	}
	printUnplaced(tw, p.Unplaced)
}

func printUnplaced(tw *tabwriter.Writer, un []api.PlanUnplaced) {
	if len(un) == 0 {
		return
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "UNPLACED VM\tREASON")
	for _, u := range un {
		fmt.Fprintf(tw, "%s\t%s\n", u.VM, u.Reason)
	}
}

// usage writes cores and memory: "12.5c/48G".
func usage(u api.PlanUsage) string {
	return num(u.CPU) + "c/" + formatMiB(int64(math.Round(u.MemoryMiB)))
}

// num writes a figure with at most one decimal.
func num(v float64) string {
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}

func (a *app) planWhatIfCommand() *cobra.Command {
	var f capacityFlags
	var add, remove []string
	var grow string
	cmd := &cobra.Command{
		Use:   "what-if [--add-hosts 'cpus=32,memory=256GiB x 4'] [--remove-host H] [--grow 20%]",
		Short: "Plan the estate after adding or removing hosts, or growing demand",
		Long: "Plan the estate as it would be after a change: hosts added by shape and count\n" +
			"(cpus, memory, and optionally cluster, provider, cpu-overcommit, memory-overcommit),\n" +
			"hosts removed, every VM's demand grown. Says whether everything still fits, how\n" +
			"many hosts it takes now and after, and the headroom left. Changes nothing.",
		Example: "  polyvisor plan what-if --add-hosts 'cpus=32,memory=256GiB x 4' --remove-host h3 --grow 20%",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, wb, err := f.request(cmd)
			if err != nil {
				return err
			}
			ch := api.PlanChange{RemoveHosts: remove}
			for _, s := range add {
				shape, err := parseHostShape(s)
				if err != nil {
					return usagef("--add-hosts %q: %v", s, err)
				}
				ch.AddHosts = append(ch.AddHosts, shape)
			}
			if grow != "" {
				g, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(grow), "%"), 64)
				if err != nil || math.IsNaN(g) || math.IsInf(g, 0) {
					return usagef("--grow %q: want a percentage such as 20%%", grow)
				}
				ch.GrowPercent = g
			}
			if len(ch.AddHosts) == 0 && len(ch.RemoveHosts) == 0 && ch.GrowPercent == 0 {
				return usagef("what-if needs a change: --add-hosts, --remove-host or --grow")
			}
			req.Change = &ch
			c, _, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.PlanWhatIf(cmd.Context(), req, wb)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), res, func(tw *tabwriter.Writer) {
				for _, w := range res.Warnings {
					fmt.Fprintf(tw, "Note: %s\n", w)
				}
				fits := "yes"
				if !res.Fits {
					fits = fmt.Sprintf("no: %d VM(s) have no host", len(res.After.Unplaced))
				}
				fmt.Fprintf(tw, "Fits:\t%s\n", fits)
				fmt.Fprintf(tw, "Hosts needed:\t%d now, %d after\n", res.Now.HostsAfter, res.After.HostsAfter)
				if len(res.Added) > 0 {
					fmt.Fprintf(tw, "Added:\t%s\n", strings.Join(res.Added, ", "))
				}
				if len(res.Change.RemoveHosts) > 0 {
					fmt.Fprintf(tw, "Removed:\t%s\n", strings.Join(res.Change.RemoveHosts, ", "))
				}
				if res.Change.GrowPercent != 0 {
					fmt.Fprintf(tw, "Demand grown:\t%s%%\n", num(res.Change.GrowPercent))
				}
				fmt.Fprintf(tw, "Headroom after:\t%s at %s%% target utilization\n", usage(res.Headroom), num(res.After.Options.TargetUtilization*100))
				printUnplaced(tw, res.After.Unplaced)
			})
		},
	}
	f.add(cmd, "0.8")
	cmd.Flags().StringArrayVar(&add, "add-hosts", nil, "add hosts: 'cpus=N,memory=SIZE[,cluster=C,provider=P,cpu-overcommit=R,memory-overcommit=R] x COUNT' (repeatable)")
	cmd.Flags().StringArrayVar(&remove, "remove-host", nil, "take a host out (repeatable)")
	cmd.Flags().StringVar(&grow, "grow", "", "grow every VM's demand by this percentage, e.g. 20%")
	return cmd
}

var shapeCount = regexp.MustCompile(`^(.*?)\s*[x×*]\s*([0-9]+)\s*$`)

// parseHostShape reads 'cpus=32,memory=256GiB x 4'.
func parseHostShape(s string) (api.PlanHostShape, error) {
	sh := api.PlanHostShape{Count: 1}
	spec := strings.TrimSpace(s)
	if m := shapeCount.FindStringSubmatch(spec); m != nil {
		n, err := strconv.Atoi(m[2])
		if err != nil || n < 1 {
			return sh, fmt.Errorf("count %q must be a whole number >= 1", m[2])
		}
		sh.Count, spec = n, m[1]
	}
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return sh, fmt.Errorf("%q is not key=value", kv)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var err error
		switch k {
		case "cpus":
			sh.CPUs, err = strconv.ParseFloat(v, 64)
			if err == nil && (sh.CPUs <= 0 || math.IsInf(sh.CPUs, 0) || math.IsNaN(sh.CPUs)) {
				err = fmt.Errorf("must be > 0")
			}
		case "memory":
			var mib int64
			mib, err = parseMiB(v)
			sh.MemoryMiB = float64(mib)
		case "cluster":
			sh.Cluster = v
		case "provider":
			sh.Provider = v
		case "cpu-overcommit":
			sh.CPUOvercommit, err = strconv.ParseFloat(v, 64)
		case "memory-overcommit":
			sh.MemoryOvercommit, err = strconv.ParseFloat(v, 64)
		default:
			return sh, fmt.Errorf("unknown key %q (cpus, memory, cluster, provider, cpu-overcommit, memory-overcommit)", k)
		}
		if err != nil {
			return sh, fmt.Errorf("%s=%q: %v", k, v, err)
		}
	}
	if sh.CPUs == 0 || sh.MemoryMiB == 0 {
		return sh, fmt.Errorf("cpus and memory are required")
	}
	return sh, nil
}

func (a *app) planForecastCommand() *cobra.Command {
	var f capacityFlags
	cmd := &cobra.Command{
		Use:   "forecast [--target-utilization 1] [--rvtools FILE]",
		Short: "When each cluster runs out of CPU or memory at the current trend",
		Long: "Fit a line through each cluster's total demand over its history and say when it\n" +
			"crosses the cluster's capacity at the target utilization (default: all of it).\n" +
			"Without history a cluster's demand is flat, and it runs out only if it is over\n" +
			"already. Changes nothing.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, wb, err := f.request(cmd)
			if err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			fc, err := c.PlanForecast(cmd.Context(), req, wb)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), fc, func(tw *tabwriter.Writer) {
				for _, w := range fc.Warnings {
					fmt.Fprintf(tw, "Note: %s\n", w)
				}
				fmt.Fprintln(tw, "CLUSTER\tHOSTS\tVMS\tCPU NOW/CAP\tCPU/DAY\tMEMORY NOW/CAP\tMEMORY/DAY\tRUNS OUT")
				for _, c := range fc.Clusters {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s/%s\t%s\t%s/%s\t%s\t%s\n", dash(c.Cluster), c.Hosts, c.VMs,
						num(c.CPU.Now), num(c.CPU.Capacity), signed(c.CPU.PerDay),
						formatMiB(int64(c.Memory.Now)), formatMiB(int64(c.Memory.Capacity)), signed(c.Memory.PerDay)+"M",
						runsOut(c))
				}
			})
		},
	}
	f.add(cmd, "1")
	return cmd
}

func signed(v float64) string {
	if v > 0 {
		return "+" + num(v)
	}
	return num(v)
}

func runsOut(c api.ClusterForecast) string {
	if c.RunsOutAt == nil {
		note := c.CPU.Note
		if note == "" {
			note = c.Memory.Note
		}
		return "never at this trend (" + dash(note) + ")"
	}
	t := c.CPU
	if c.RunsOut == "memory" {
		t = c.Memory
	}
	days := ""
	if t.DaysLeft != nil {
		days = fmt.Sprintf(", in %s days", num(*t.DaysLeft))
	}
	return fmt.Sprintf("%s on %s%s", c.RunsOut, c.RunsOutAt.Format(time.DateOnly), days)
}
