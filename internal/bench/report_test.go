package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleLifecycle() *LifecycleReport {
	rep := &LifecycleReport{
		Machine:     Machine{CPUs: 2, CPUModel: "Test CPU", GoVersion: "go1.26"},
		Target:      lifecycleTarget,
		PollEveryMs: 2,
		Warmup:      LifecycleRound{Order: "polyvisor,bare", Polyvisor: PolyvisorBoot{TotalMs: 2900}, Bare: BareBoot{TotalMs: 2600}},
		BareArgs:    []string{"qemu-system-x86_64", "-accel", "tcg"},
	}
	for i := 1; i <= 3; i++ {
		order := "polyvisor,bare"
		if i%2 == 0 {
			order = "bare,polyvisor"
		}
		rep.Rounds = append(rep.Rounds, LifecycleRound{
			Round: i, Order: order,
			Polyvisor: PolyvisorBoot{TotalMs: 2200 + float64(i), AcceptedMs: 3.5, QEMUUpMs: 100, GuestMs: 2100, DeleteMs: 30},
			Bare:      BareBoot{TotalMs: 2150, QEMUUpMs: 60, GuestMs: 2090},
		})
	}
	rep.summarize()
	return rep
}

func TestLifecycleText(t *testing.T) {
	var b bytes.Buffer
	if err := sampleLifecycle().writeText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"2 CPUs (Test CPU)",
		"warm-up",
		"bare,polyvisor",
		"median",
		"= 2202 / 2150 = 1.024x",
		"target <= 1.05x: met",
		"bare:      qemu-system-x86_64 -accel tcg",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "exact-args") {
		t.Errorf("report shows exact-args columns without that boot:\n%s", out)
	}
}

func TestAPITextAndTargets(t *testing.T) {
	rep := &APIReport{
		Transport: "tls", Concurrency: 32,
		Create: CreatePhase{Throughput: Throughput{Count: 1000, Concurrency: 32, PerSecond: 1200, Latency: Latency{P99Ms: 60}}, ToVMs: 1000},
		Etcd:   EtcdPhase{Put: Throughput{PerSecond: 3000}, PayloadBytes: 900},
		Reads: []ReadPhase{
			{Route: "GET /v1/vms/{name}", VMs: 1000, Throughput: Throughput{Concurrency: 1, Latency: Latency{P99Ms: 0.8}}},
			{Route: "GET /v1/vms?limit=500", VMs: 1000, Throughput: Throughput{Concurrency: 1, Latency: Latency{P99Ms: 70}}},
			{Route: "GET /v1/vms/{name}", VMs: 1000, Throughput: Throughput{Concurrency: 32, Latency: Latency{P99Ms: 9}}},
		},
		Memory: MemoryPhase{VMs: 10000, Server: Memory{RSSBytes: 300 << 20, HWMBytes: 320 << 20}},
	}
	rep.Targets = apiTargets(rep)
	met := map[string]bool{}
	for _, tg := range rep.Targets {
		met[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"creates/s":                                      true,
		"creates/s vs raw etcd puts/s":                   false, // 1200 < 1500
		"p99 GET /v1/vms/{name} (1000 VMs, 1 client)":    true,  // the loaded 9 ms is not judged
		"p99 GET /v1/vms?limit=500 (1000 VMs, 1 client)": false,
		"server VmRSS with 10000 stopped VMs":            true,
	}
	for name, w := range want {
		if got, ok := met[name]; !ok || got != w {
			t.Errorf("target %q: met %v (present %v), want %v; all: %+v", name, got, ok, w, rep.Targets)
		}
	}
	var b bytes.Buffer
	if err := rep.writeText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"POST /v1/vms (202)", "etcd put (900 B VM JSON)", "300.0 MiB", "40% (1200 of 3000)", "NO"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestWriteReportJSON(t *testing.T) {
	var b bytes.Buffer
	if err := writeReport(&b, "json", sampleLifecycle()); err != nil {
		t.Fatal(err)
	}
	var back LifecycleReport
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b.String())
	}
	if len(back.Rounds) != 3 || back.Ratio == 0 || back.Target != lifecycleTarget {
		t.Errorf("round trip lost data: %+v", back)
	}
}

func TestOutputFlag(t *testing.T) {
	var o outputFlag
	for _, ok := range []string{"table", "json", ""} {
		if err := o.Set(ok); err != nil {
			t.Errorf("Set(%q): %v", ok, err)
		}
	}
	if err := o.Set("yaml"); err == nil {
		t.Error("Set(yaml) accepted")
	}
}

func TestWatchMarker(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	type result struct {
		mt  markerTimes
		err error
	}
	done := make(chan result, 1)
	go func() {
		mt, err := watchMarker(context.Background(), path, guestMarker, time.Millisecond, time.Minute)
		done <- result{mt, err}
	}()
	time.Sleep(20 * time.Millisecond)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("booting...\nPOLYVISOR-GU")
	f.Sync()
	// The marker is split across two writes: until the second, the watcher
	// must not have found it. (A watcher starved of CPU past this wait
	// hides that mistake; it cannot make the test fail wrongly.)
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("the marker was found before it was complete: %+v %v", r.mt, r.err)
	default:
	}
	f.WriteString("EST-READY\n")
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.mt.FileAt.IsZero() || r.mt.MarkerAt.Before(r.mt.FileAt) {
		t.Errorf("file seen %v, marker seen %v", r.mt.FileAt, r.mt.MarkerAt)
	}
	if _, err := watchMarker(context.Background(), filepath.Join(dir, "none"), guestMarker, time.Millisecond, 20*time.Millisecond); err == nil {
		t.Error("watchMarker of a file that never appears did not fail")
	}
}

func TestRunConcurrent(t *testing.T) {
	seen := make([]int, 100)
	ds, wall, err := runConcurrent(context.Background(), 100, 8, func(_ context.Context, _, i int) error {
		seen[i]++
		return nil
	})
	if err != nil || len(ds) != 100 || wall <= 0 {
		t.Fatalf("runConcurrent: %d latencies, wall %v, err %v", len(ds), wall, err)
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("call %d made %d times", i, n)
		}
	}
	_, _, err = runConcurrent(context.Background(), 100, 4, func(_ context.Context, _, i int) error {
		if i == 10 {
			return os.ErrClosed
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "call 10") {
		t.Errorf("error of call 10 not returned: %v", err)
	}
}
