package hypervisortest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/hypervisor/qemu"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// TestMeasureQEMUTimings measures what the fake driver's QEMUProfile
// imitates: the QEMU driver's Create, Start, graceful and forced Stop and
// Destroy with the tiny test guest (1 vCPU, 256 MiB, an overlay disk, one
// user-mode NIC), and the QEMU process's CPU time and resident memory
// during and after its boot. It prints the figures and asserts nothing
// about them; it runs only with POLYVISOR_MEASURE_QEMU=1 (rounds in
// POLYVISOR_MEASURE_ROUNDS, default 8):
//
//	POLYVISOR_MEASURE_QEMU=1 go test -run TestMeasureQEMUTimings -v ./internal/hypervisor/hypervisortest/
func TestMeasureQEMUTimings(t *testing.T) {
	if os.Getenv("POLYVISOR_MEASURE_QEMU") == "" {
		t.Skip("a measurement, not a check: set POLYVISOR_MEASURE_QEMU=1 to run it")
	}
	guest.RequireQEMU(t)
	g := guest.Build(t)
	rounds := 8
	if n, err := strconv.Atoi(os.Getenv("POLYVISOR_MEASURE_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	d, err := qemu.New(qemu.Config{
		StateDir: t.TempDir(),
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		RunDir:   filepath.Join(os.TempDir(), "polyvisor-test-run"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	var create, start, stopACPI, stopForce, destroy, ready []float64
	var samples [][]hypervisor.Stats // per round, every 250 ms from the start
	for i := range rounds {
		cfg := hypervisor.VMConfig{
			Name: fmt.Sprintf("measure-%d", i), UID: fmt.Sprintf("measure-%d-%d", i, time.Now().UnixNano()), VCPUs: 1, MemoryMiB: 256,
			Disks:  []hypervisor.DiskConfig{{Name: "root", BackingFile: g.Disk}},
			NICs:   []hypervisor.NICConfig{{Network: "user"}},
			Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: guest.Cmdline,
		}
		t0 := time.Now()
		h, err := d.Create(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		create = append(create, ms(time.Since(t0)))
		t0 = time.Now()
		if err := d.Start(ctx, h, cfg); err != nil {
			t.Fatal(err)
		}
		start = append(start, ms(time.Since(t0)))
		var round []hypervisor.Stats
		readyAt := 0.0
		for tick := 0; tick < 40; tick++ { // 10 s
			st, err := d.Stats(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			round = append(round, st)
			if readyAt == 0 {
				if b, _ := d.ConsoleLog(ctx, h, 0); strings.Contains(string(b), guest.ReadyMarker) {
					readyAt = ms(time.Since(t0))
				}
			}
			time.Sleep(250 * time.Millisecond)
		}
		samples = append(samples, round)
		ready = append(ready, readyAt)
		t0 = time.Now()
		if err := d.Stop(ctx, h, hypervisor.StopOptions{Timeout: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		stopACPI = append(stopACPI, ms(time.Since(t0)))
		if err := d.Start(ctx, h, cfg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		t0 = time.Now()
		if err := d.Stop(ctx, h, hypervisor.StopOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		stopForce = append(stopForce, ms(time.Since(t0)))
		t0 = time.Now()
		if err := d.Destroy(ctx, h, false); err != nil {
			t.Fatal(err)
		}
		destroy = append(destroy, ms(time.Since(t0)))
		t.Logf("round %d: create %.1f start %.1f ready %.0f stop(acpi) %.1f stop(force) %.1f destroy %.1f ms",
			i, create[i], start[i], ready[i], stopACPI[i], stopForce[i], destroy[i])
	}
	for _, m := range []struct {
		name string
		v    []float64
	}{{"create", create}, {"start", start}, {"ready", ready}, {"stopACPI", stopACPI}, {"stopForce", stopForce}, {"destroy", destroy}} {
		s := slices.Clone(m.v)
		slices.Sort(s)
		t.Logf("%s ms (sorted): %s", m.name, join(s))
	}
	// CPU seconds and RSS at each 250 ms tick, median over the rounds.
	var cpu, rss []string
	for tick := range samples[0] {
		var c, r []float64
		for _, round := range samples {
			c = append(c, round[tick].CPUSeconds)
			r = append(r, float64(round[tick].MemoryBytes)/(1<<20))
		}
		slices.Sort(c)
		slices.Sort(r)
		cpu = append(cpu, fmt.Sprintf("%.2f", c[len(c)/2]))
		rss = append(rss, fmt.Sprintf("%.0f", r[len(r)/2]))
	}
	t.Logf("cpu seconds every 250 ms after start (median): %s", strings.Join(cpu, " "))
	t.Logf("RSS MiB every 250 ms after start (median): %s", strings.Join(rss, " "))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func join(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strings.Join(s, ", ")
}
