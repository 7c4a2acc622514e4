package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3} // unsorted on purpose
	for _, tc := range []struct {
		p, want float64
	}{
		{0, 1}, {25, 2}, {50, 3}, {75, 4}, {100, 5},
		{10, 1.4}, {90, 4.6}, {99, 4.96},
		{-5, 1}, {150, 5}, // clamped
	} {
		if got := percentile(xs, tc.p); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("percentile(%v, %v) = %v, want %v", xs, tc.p, got, tc.want)
		}
	}
	if xs[0] != 5 || xs[4] != 3 {
		t.Errorf("percentile sorted its input: %v", xs)
	}
	if got := percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("percentile(nil) = %v, want NaN", got)
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("percentile of one sample = %v, want 7", got)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5}, // even count: mean of the middle two
		{[]float64{2200, 2300, 2100, 2250, 2150, 2600, 2120}, 2200},
	} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := summarize(ds)
	if l.Samples != 100 || l.MinMs != 1 || l.MaxMs != 100 {
		t.Errorf("summarize: %+v", l)
	}
	if math.Abs(l.P50Ms-50.5) > 1e-9 || math.Abs(l.P99Ms-99.01) > 1e-9 || math.Abs(l.MeanMs-50.5) > 1e-9 {
		t.Errorf("summarize: p50 %v p99 %v mean %v, want 50.5, 99.01, 50.5", l.P50Ms, l.P99Ms, l.MeanMs)
	}
	if (summarize(nil) != Latency{}) {
		t.Errorf("summarize(nil) is not zero")
	}
}

func TestRate(t *testing.T) {
	if got := rate(1000, 2*time.Second); got != 500 {
		t.Errorf("rate = %v, want 500", got)
	}
	if got := rate(10, 0); got != 0 {
		t.Errorf("rate over zero time = %v, want 0", got)
	}
}

func TestLifecycleSummarize(t *testing.T) {
	rep := &LifecycleReport{Target: lifecycleTarget}
	for i, pv := range []float64{2300, 2200, 2400} {
		rep.Rounds = append(rep.Rounds, LifecycleRound{
			Round:     i + 1,
			Polyvisor: PolyvisorBoot{TotalMs: pv, AcceptedMs: 3},
			Bare:      BareBoot{TotalMs: []float64{2000, 2100, 2200}[i]},
		})
	}
	rep.summarize()
	if rep.Polyvisor.TotalMs != 2300 || rep.Bare.TotalMs != 2100 {
		t.Fatalf("medians %v and %v, want 2300 and 2100", rep.Polyvisor.TotalMs, rep.Bare.TotalMs)
	}
	if want := 2300.0 / 2100; math.Abs(rep.Ratio-want) > 1e-12 || rep.Met {
		t.Errorf("ratio %v met %v, want %v and not met", rep.Ratio, rep.Met, want)
	}
	rep.Rounds[1].Polyvisor.TotalMs = 2000
	rep.Rounds[0].Polyvisor.TotalMs = 2150
	rep.summarize()
	if !rep.Met {
		t.Errorf("ratio %v should meet %v", rep.Ratio, rep.Target)
	}
}

func TestMetricValue(t *testing.T) {
	text := strings.Join([]string{
		"# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.",
		"# TYPE go_memstats_heap_inuse_bytes gauge",
		"go_memstats_heap_inuse_bytes 1.2345e+07",
		"go_memstats_heap_inuse_bytes_total 9",
		`polyvisor_vms{state="running"} 3`,
		`polyvisor_vms{state="stopped"} 9998`,
	}, "\n")
	for _, tc := range []struct {
		series string
		want   float64
		ok     bool
	}{
		{"go_memstats_heap_inuse_bytes", 12345000, true},
		{`polyvisor_vms{state="stopped"}`, 9998, true},
		{`polyvisor_vms{state="paused"}`, 0, false},
		{"go_memstats", 0, false},
	} {
		got, ok := metricValue(text, tc.series)
		if got != tc.want || ok != tc.ok {
			t.Errorf("metricValue(%s) = %v, %v; want %v, %v", tc.series, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\tpolyvisor\nVmPeak:\t 2000000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n"
	m, err := parseProcStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSBytes != 100<<20 || m.HWMBytes != 200<<20 {
		t.Errorf("parsed %+v, want RSS 100 MiB and HWM 200 MiB", m)
	}
	if _, err := parseProcStatus(strings.NewReader("Name:\tx\nVmRSS:\t1 kB\n")); err == nil {
		t.Error("status without VmHWM parsed without error")
	}
}

func TestCPUParsing(t *testing.T) {
	busy, idle := parseStatCPU("cpu  1000 50 450 8000 500 10 40 0 0 0")
	if busy != 15.5 || idle != 85 {
		t.Errorf("parseStatCPU: busy %v idle %v, want 15.5 and 85", busy, idle)
	}
	stat := "4242 (poly visor) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 12 0 100 0 0"
	if got := parseProcStatCPU(stat); got != 3.5 {
		t.Errorf("parseProcStatCPU = %v, want 3.5", got)
	}
	u := CPUUse{WallSeconds: 2, ServerSeconds: 3, BenchSeconds: 0.5, OtherSeconds: 0.2, IdleSeconds: 0.3}
	if got, want := u.String(), "server 1.50, bench 0.25, others 0.10, idle 0.15"; got != want {
		t.Errorf("CPUUse.String() = %q, want %q", got, want)
	}
}
