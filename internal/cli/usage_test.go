package cli

import (
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestDescribeUsage draws a history: a sparkline scaled to its largest
// column, a gap where nothing was sampled, the means and peaks.
func TestDescribeUsage(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	u := &api.UsageHistory{Kind: "vm", Name: "web", Since: t0, Until: t0.Add(8 * time.Hour), StepSeconds: 3600, CPUs: 4, MemoryMiB: 2048}
	for i, cpu := range []float64{0, 1, 2, 3, 4, 5, 6} {
		if i == 3 {
			continue // not sampled
		}
		u.Points = append(u.Points, api.UsagePoint{Time: t0.Add(time.Duration(i) * time.Hour), CPU: cpu, CPUMax: cpu + 0.5,
			MemoryBytes: 512 << 20, MemoryMaxBytes: 1 << 30, Samples: 12})
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	describeUsage(tw, u, true)
	tw.Flush()
	out := b.String()
	for _, want := range []string{
		"POINTS  6 of 1h0m0s",
		"CPU     ▁▂▃ ▆▇█ ", // 8 hourly columns: the 4th and the 8th empty
		"mean 3.00, peak 6.50 cores of 4",
		"mean 512M, peak 1G of 2G",
		"SAMPLES",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 5+2+6 {
		t.Errorf("%d lines:\n%s", n, out)
	}
	b.Reset()
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	describeUsage(tw, &api.UsageHistory{Kind: "host", Name: "h1", Since: t0, Until: t0.Add(time.Hour)}, false)
	tw.Flush()
	if !strings.Contains(b.String(), "none: nothing was sampled") {
		t.Errorf("an empty history: %s", b.String())
	}
}
