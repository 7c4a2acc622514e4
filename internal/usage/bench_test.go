package usage

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFleetRound records one sampling round of 1,000 hosts with 10
// VMs each (11,000 series, each host's VMs and host in one store as an
// agent keeps them, here one store per host as on a fleet), reporting the
// cost per sample. Run: go test -run - -bench FleetRound -benchtime 20x ./internal/usage
func BenchmarkFleetRound(b *testing.B) {
	const hosts, vms = 1000, 10
	dir := b.TempDir()
	recs := make([]*Recorder, hosts)
	for h := range recs {
		st, err := Open(fmt.Sprintf("%s/%04d", dir, h), Options{MaxOpen: 16})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		recs[h] = NewRecorder(st, fmt.Sprintf("h%04d", h))
	}
	ctx := context.Background()
	samples := make([][]VMSample, hosts)
	for h := range samples {
		for v := range vms {
			samples[h] = append(samples[h], VMSample{UID: fmt.Sprintf("vm-%04d-%02d", h, v), MemoryBytes: 1 << 30})
		}
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	round := func() {
		at = at.Add(time.Minute)
		for h, r := range recs {
			for v := range samples[h] {
				samples[h][v].CPUSeconds += 30
			}
			if err := r.Round(ctx, at, samples[h]); err != nil {
				b.Fatal(err)
			}
		}
	}
	round() // makes the series: not the steady state measured
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		round()
	}
	n := float64(b.N * hosts * (vms + 1))
	// Process CPU time (user and system) as well as wall time: on a
	// shared machine the wall time mostly measures the wait for a CPU.
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/n, "cpu-ns/sample")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/sample")
	b.ReportMetric(0, "ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkQueryYear reads a year of one series at its hourly step.
func BenchmarkQueryYear(b *testing.B) {
	st, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for h := range 366 * 24 {
		if err := st.Add(KindVM, "v", t0.Add(time.Duration(h)*time.Hour), 1, 1<<30); err != nil {
			b.Fatal(err)
		}
	}
	end := t0.Add(366 * 24 * time.Hour)
	b.ResetTimer()
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
	for range b.N {
		pts, _, err := st.Query(KindVM, "v", end.Add(-365*24*time.Hour), end, 0)
		if err != nil || len(pts) < 8700 {
			b.Fatalf("%d points, %v", len(pts), err)
		}
	}
}
