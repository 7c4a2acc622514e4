package bench

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSumRequests(t *testing.T) {
	text := `# HELP polyvisor_api_requests_total API requests by route and status code.
# TYPE polyvisor_api_requests_total counter
polyvisor_api_requests_total{code="200",route="PUT /v1/agent/hosts/{name}/status"} 1200
polyvisor_api_requests_total{code="503",route="PUT /v1/agent/hosts/{name}/status"} 3
polyvisor_api_requests_total{code="202",route="POST /v1/vms"} 40
polyvisor_api_requests_total_other{code="200",route="PUT /v1/agent/hosts/{name}/status"} 99
`
	if got := sumRequests(text, heartbeatRoute); got != 1203 {
		t.Errorf("heartbeats: %v, want 1203", got)
	}
	if got := sumRequests(text, ""); got != 1243 {
		t.Errorf("all requests: %v, want 1243", got)
	}
}

// runUntil stops at its deadline without error and returns what was done;
// any other error is returned.
func TestRunUntil(t *testing.T) {
	// The first 50 calls return at once, the others wait for the
	// deadline: what is made does not depend on how fast this machine is.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var calls atomic.Int64
	ds, _, made, err := runUntil(ctx, 100000, 4, func(ctx context.Context, _, _ int) error {
		if calls.Add(1) <= 50 {
			return nil
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if err != nil || made != 50 || len(ds) != made {
		t.Errorf("runUntil at the deadline: made %d of %d calls, %d latencies, err %v; want 50 made, no error", made, calls.Load(), len(ds), err)
	}
	boom := errors.New("boom")
	if _, _, _, err := runUntil(context.Background(), 10, 2, func(context.Context, int, int) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("a failing call: %v", err)
	}
}

func TestScaleTextAndTargets(t *testing.T) {
	rep := &ScaleReport{
		Machine: Machine{CPUs: 2, CPUModel: "Test CPU"}, ControlPlane: "1 server", Servers: []string{"https://127.0.0.1:7443"},
		HeartbeatSeconds: 5, VMsPerHost: 25, VCPUs: 2, MemoryMiB: 4096, SharedConns: 256,
		Steps: []ScaleStep{
			{Hosts: 1000, NewHosts: 1000, VMsWanted: 25000, VMs: 25000, RegisterSeconds: 10,
				Heartbeat: HeartbeatPhase{ServerHeartbeatsPerSecond: 200, CPU: CPUUse{WallSeconds: 10, ServerSeconds: 1}},
				Get:       Throughput{Count: 10, Latency: Latency{P99Ms: 1.5}}, List: Throughput{Count: 10, Latency: Latency{P99Ms: 40}},
				ServerMemory: []Memory{{RSSBytes: 1 << 30, HWMBytes: 2 << 30}}, ListAll: []ListAllRun{{Seconds: 3.5, Lines: 25001}}},
			{Hosts: 10000, NewHosts: 9000, VMsWanted: 250000, VMs: 90000, CreateTimedOut: true,
				Get: Throughput{Count: 10, Latency: Latency{P99Ms: 7}}, List: Throughput{Count: 10, Latency: Latency{P99Ms: 150}},
				ServerMemory: []Memory{{RSSBytes: 3 << 30, HWMBytes: 5 << 30}}},
		},
	}
	rep.Targets = scaleTargets(rep)
	met := map[string]bool{}
	for _, tg := range rep.Targets {
		met[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"p99 GET /v1/vms?limit=500 (1000 hosts, 25000 VMs)":  true,
		"p99 GET /v1/vms/{name} (1000 hosts, 25000 VMs)":     true,
		"server 1 VmHWM (1000 hosts, 25000 VMs)":             true,
		"p99 GET /v1/vms?limit=500 (10000 hosts, 90000 VMs)": false,
		"p99 GET /v1/vms/{name} (10000 hosts, 90000 VMs)":    false,
		"server 1 VmHWM (10000 hosts, 90000 VMs)":            false,
		"VMs created (10000 hosts)":                          false,
	}
	if len(met) != len(want) {
		t.Errorf("targets %v, want %v", met, want)
	}
	for name, w := range want {
		if got, ok := met[name]; !ok || got != w {
			t.Errorf("target %q: met %v (present %v), want %v", name, got, ok, w)
		}
	}
	var b bytes.Buffer
	if err := rep.writeText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{"over 256 shared connections", "creates STOPPED at the time limit: 90000 of 250000 VMs",
		"vm list --all-projects: 3.50 s, 25001 lines", "0.10", "VMs created (10000 hosts)"} {
		if !strings.Contains(out, s) {
			t.Errorf("report lacks %q:\n%s", s, out)
		}
	}
}
