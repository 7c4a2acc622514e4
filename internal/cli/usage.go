package cli

import (
	"fmt"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// sparkWidth is how many columns a sparkline takes at most.
const sparkWidth = 60

func (a *app) vmUsageCommand() *cobra.Command {
	var r client.UsageRange
	var points bool
	cmd := &cobra.Command{
		Use:   "usage NAME",
		Short: "Show a VM's CPU and memory history",
		Long: `Show a VM's CPU (cores busy) and memory over time, as its host sampled
them: 5-minute points for 28 days, hourly ones for a year.`,
		Example: "  polyvisor vm usage web --since 7d\n  polyvisor vm usage web --since 2026-12-01T00:00:00Z --step 1h --points",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			u, err := c.VMUsage(cmd.Context(), args[0], r)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) { describeUsage(tw, u, points) })
		},
	}
	addUsageFlags(cmd, &r, &points)
	return cmd
}

func (a *app) hostUsageCommand() *cobra.Command {
	var r client.UsageRange
	var points bool
	cmd := &cobra.Command{
		Use:     "usage NAME",
		Short:   "Show a host's CPU and memory history (the sum of its VMs')",
		Example: "  polyvisor host usage h1 --since 30d --step 1d",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			u, err := c.HostUsage(cmd.Context(), args[0], r)
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) { describeUsage(tw, u, points) })
		},
	}
	addUsageFlags(cmd, &r, &points)
	return cmd
}

func addUsageFlags(cmd *cobra.Command, r *client.UsageRange, points *bool) {
	f := cmd.Flags()
	f.StringVar(&r.Since, "since", "", "from this time (RFC 3339) or this long before --until (24h, 7d); default 24h")
	f.StringVar(&r.Until, "until", "", "to this time (RFC 3339); default now")
	f.StringVar(&r.Step, "step", "", "one point per step (5m, 1h, 1d); default the finest kept")
	f.BoolVar(points, "points", false, "list every point, not only the sparklines")
}

// describeUsage writes a history as sparklines with their figures, and
// its points when asked.
func describeUsage(tw *tabwriter.Writer, u *api.UsageHistory, points bool) {
	step := time.Duration(u.StepSeconds) * time.Second
	row(tw, "NAME", u.Kind+" "+u.Name)
	row(tw, "FROM", u.Since.Local().Format(time.DateTime)+" to "+u.Until.Local().Format(time.DateTime))
	if len(u.Points) == 0 {
		row(tw, "POINTS", "none: nothing was sampled in this time")
		return
	}
	row(tw, "POINTS", fmt.Sprintf("%d of %s", len(u.Points), step))
	cpu, cpuMax, mem, memMax := usageFigures(u.Points)
	capCPU, capMem := "", ""
	if u.CPUs > 0 {
		capCPU = fmt.Sprintf(" of %d", u.CPUs)
	}
	if u.MemoryMiB > 0 {
		capMem = " of " + formatMiB(u.MemoryMiB)
	}
	row(tw, "CPU", sparkline(u, func(p api.UsagePoint) float64 { return p.CPU }),
		fmt.Sprintf("mean %.2f, peak %.2f cores%s", cpu, cpuMax, capCPU))
	row(tw, "MEMORY", sparkline(u, func(p api.UsagePoint) float64 { return float64(p.MemoryBytes) }),
		fmt.Sprintf("mean %s, peak %s%s", formatMiB(int64(mem)>>20), formatMiB(int64(memMax)>>20), capMem))
	if !points {
		return
	}
	row(tw)
	row(tw, "TIME", "CPU", "CPU MAX", "MEMORY", "MEMORY MAX", "SAMPLES")
	for _, p := range u.Points {
		row(tw, p.Time.Local().Format(time.DateTime), fmt.Sprintf("%.2f", p.CPU), fmt.Sprintf("%.2f", p.CPUMax),
			formatMiB(p.MemoryBytes>>20), formatMiB(p.MemoryMaxBytes>>20), p.Samples)
	}
}

// usageFigures are a history's means (weighted by samples) and peaks.
func usageFigures(pts []api.UsagePoint) (cpu, cpuMax, mem, memMax float64) {
	var n float64
	for _, p := range pts {
		w := float64(p.Samples)
		cpu += p.CPU * w
		mem += float64(p.MemoryBytes) * w
		n += w
		cpuMax = math.Max(cpuMax, p.CPUMax)
		memMax = math.Max(memMax, float64(p.MemoryMaxBytes))
	}
	if n > 0 {
		cpu, mem = cpu/n, mem/n
	}
	return cpu, cpuMax, mem, memMax
}

var sparks = []rune("▁▂▃▄▅▆▇█")

// sparkline draws the history's time span in at most sparkWidth columns,
// each the mean of its points, scaled from zero to the largest column; a
// column with no point is a space.
func sparkline(u *api.UsageHistory, value func(api.UsagePoint) float64) string {
	span := u.Until.Sub(u.Since)
	if span <= 0 {
		return ""
	}
	cols := sparkWidth
	if step := time.Duration(u.StepSeconds) * time.Second; step > 0 && int(span/step) < cols {
		cols = max(int(span/step), 1)
	}
	sum := make([]float64, cols)
	cnt := make([]int, cols)
	for _, p := range u.Points {
		i := int(float64(p.Time.Sub(u.Since)) / float64(span) * float64(cols))
		if i < 0 || i >= cols {
			continue
		}
		sum[i] += value(p)
		cnt[i]++
	}
	top := 0.0
	for i := range sum {
		if cnt[i] > 0 {
			sum[i] /= float64(cnt[i])
			top = math.Max(top, sum[i])
		}
	}
	var b strings.Builder
	for i := range sum {
		switch {
		case cnt[i] == 0:
			b.WriteRune(' ')
		case top == 0:
			b.WriteRune(sparks[0])
		default:
			b.WriteRune(sparks[min(int(sum[i]/top*float64(len(sparks)-1)+0.5), len(sparks)-1)])
		}
	}
	return b.String()
}
