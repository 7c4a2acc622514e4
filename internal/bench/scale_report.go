package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/polyvisor/polyvisor/internal/simagent"
)

// ScaleReport is the result of `bench scale`.
type ScaleReport struct {
	Machine      Machine  `json:"machine"`
	ControlPlane string   `json:"controlPlane"`
	Servers      []string `json:"servers"`
	// FileLimit is the limit of open files the processes ran with.
	FileLimit uint64 `json:"fileLimit"`
	// SharedConns is the pool of request connections the simulated hosts
	// share; 0 when each has its own.
	SharedConns      int         `json:"sharedConns"`
	HeartbeatSeconds float64     `json:"heartbeatSeconds"`
	VMsPerHost       int         `json:"vmsPerHost"`
	VCPUs            int         `json:"vcpus"`
	MemoryMiB        int64       `json:"memoryMiB"`
	PprofURL         string      `json:"pprofUrl,omitempty"`
	ServerAtStart    Memory      `json:"serverAtStart"`
	Steps            []ScaleStep `json:"steps"`
	Targets          []Target    `json:"targets"`
	// Error is why the run ended before its last size, if it did;
	// ServerErrors the first errors the server answered creates with.
	Error        string   `json:"error,omitempty"`
	ServerErrors []string `json:"serverErrors,omitempty"`
}

// ScaleStep is what was measured at one fleet size.
type ScaleStep struct {
	Hosts     int `json:"hosts"`
	NewHosts  int `json:"newHosts"`
	VMsWanted int `json:"vmsWanted"`
	// VMs is how many VMs existed when the reads were measured.
	VMs int `json:"vms"`
	// Tokens is the administrator making a join token per new host.
	Tokens Throughput `json:"tokens"`
	// RegisterSeconds is from the simulator's start until the server had
	// every host ready; SimRegisterSeconds the simulator's own time from
	// its first registration to its last.
	RegisterSeconds    float64        `json:"registerSeconds"`
	SimRegisterSeconds float64        `json:"simRegisterSeconds"`
	RegisterCPU        CPUUse         `json:"registerCpu"`
	Heartbeat          HeartbeatPhase `json:"heartbeat"`
	Create             Throughput     `json:"create"`
	CreateTimedOut     bool           `json:"createTimedOut"`
	// CreateErrors counts creates the server failed (5xx), each asked again.
	CreateErrors int `json:"createErrors"`
	// Seeded VMs were written straight into the store (--seed), Seed at
	// what rate; SeedConvergeSeconds is from the seeding's start until the
	// server counted them all running, SeedConvergeCPU after the seeding.
	Seeded              int        `json:"seeded,omitempty"`
	Seed                Throughput `json:"seed,omitzero"`
	SeedRunning         int        `json:"seedRunning,omitempty"`
	SeedConvergeSeconds float64    `json:"seedConvergeSeconds,omitempty"`
	SeedConvergeCPU     CPUUse     `json:"seedConvergeCpu,omitzero"`
	// Running is how many VMs the server counted running, ConvergeSeconds
	// after the creates began.
	Running         int        `json:"running"`
	ConvergeSeconds float64    `json:"convergeSeconds"`
	ConvergeCPU     CPUUse     `json:"convergeCpu"`
	Get             Throughput `json:"get"`
	List            Throughput `json:"list"`
	// Place is single creates' 202; PlaceToRunning until their operation
	// succeeded (the VM running on its host).
	Place          Throughput   `json:"place"`
	PlaceToRunning Latency      `json:"placeToRunning"`
	ListAll        []ListAllRun `json:"listAll"`
	ServerMemory   []Memory     `json:"serverMemory"`
	ServerGo       GoMemory     `json:"serverGo"`
	SimMemory      []Memory     `json:"simMemory"`
	EtcdDBBytes    int64        `json:"etcdDbBytes"`
}

// HeartbeatPhase is the fleet heartbeating with nothing else going on.
type HeartbeatPhase struct {
	Seconds float64 `json:"seconds"`
	// Requests the server counted (its /metrics), per second.
	ServerHeartbeatsPerSecond float64 `json:"serverHeartbeatsPerSecond"`
	ServerRequestsPerSecond   float64 `json:"serverRequestsPerSecond"`
	// What the simulators saw: heartbeats answered and failed, the
	// heartbeat's latency and how late heartbeats left.
	SimHeartbeats int64            `json:"simHeartbeats"`
	SimErrors     int64            `json:"simErrors"`
	Latency       simagent.Latency `json:"latency"`
	Late          simagent.Latency `json:"late"`
	CPU           CPUUse           `json:"cpu"`
}

// ListAllRun is one run of `polyvisor vm list --all-projects`.
type ListAllRun struct {
	Seconds        float64 `json:"seconds"`
	Lines          int     `json:"lines"`
	CLICPUSeconds  float64 `json:"cliCpuSeconds"`
	CLIMaxRSSBytes int64   `json:"cliMaxRssBytes"`
	CPU            CPUUse  `json:"cpu"`
}

// Scale targets.
const (
	targetScaleListP99Ms   = 100
	targetScaleGetP99Ms    = 5
	targetScaleServerBytes = 4 << 30
)

// scaleTargets judges each size against the targets.
func scaleTargets(rep *ScaleReport) []Target {
	var ts []Target
	for _, s := range rep.Steps {
		at := fmt.Sprintf("%d hosts, %d VMs", s.Hosts, s.VMs)
		if s.List.Count > 0 {
			ts = append(ts, Target{Name: "p99 GET /v1/vms?limit=500 (" + at + ")", Goal: fmt.Sprintf("< %d ms", targetScaleListP99Ms),
				Measured: fmt.Sprintf("%.1f ms", s.List.Latency.P99Ms), Met: s.List.Latency.P99Ms < targetScaleListP99Ms})
		}
		if s.Get.Count > 0 {
			ts = append(ts, Target{Name: "p99 GET /v1/vms/{name} (" + at + ")", Goal: fmt.Sprintf("< %d ms", targetScaleGetP99Ms),
				Measured: fmt.Sprintf("%.2f ms", s.Get.Latency.P99Ms), Met: s.Get.Latency.P99Ms < targetScaleGetP99Ms})
		}
		for i, m := range s.ServerMemory {
			ts = append(ts, Target{Name: fmt.Sprintf("server %d VmHWM (%s)", i+1, at), Goal: "< 4 GiB",
				Measured: mib(m.HWMBytes), Met: m.HWMBytes > 0 && m.HWMBytes < targetScaleServerBytes})
		}
		if s.VMs < s.VMsWanted {
			ts = append(ts, Target{Name: fmt.Sprintf("VMs created (%d hosts)", s.Hosts), Goal: fmt.Sprint(s.VMsWanted),
				Measured: fmt.Sprint(s.VMs), Met: false})
		}
	}
	return ts
}

func (rep *ScaleReport) writeText(w io.Writer) error {
	writeMachine(w, rep.Machine)
	fmt.Fprintf(w, "Control plane: %s (%s); open files limit %d\n", rep.ControlPlane, strings.Join(rep.Servers, ", "), rep.FileLimit)
	if rep.SharedConns > 0 {
		fmt.Fprintf(w, "Connections: each simulated host its own watch; their requests over %d shared connections per server\n", rep.SharedConns)
	} else {
		fmt.Fprintf(w, "Connections: each simulated host its own, for its watch and its requests, as real agents\n")
	}
	fmt.Fprintf(w, "Simulated hosts: 64 CPUs, 256 GiB each, heartbeat every %.0f s; VMs: %d vCPUs, %d MiB, kernel + initrd, running; %d per host\n\n",
		rep.HeartbeatSeconds, rep.VCPUs, rep.MemoryMiB, rep.VMsPerHost)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	cols := []string{"hosts", "VMs", "register s", "hosts/s", "tokens/s", "heartbeats/s", "hb p99 ms", "server CPUs (hb)", "sim CPUs (hb)",
		"creates/s", "202 p99 ms", "get p99 ms", "list p99 ms", "place p50 ms", "place p99 ms", "to running p99 ms", "list --all s",
		"server RSS", "server HWM", "sim RSS", ""}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, s := range rep.Steps {
		per := func(v float64) string {
			if s.Heartbeat.CPU.WallSeconds <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", v/s.Heartbeat.CPU.WallSeconds)
		}
		listAll := "-"
		if len(s.ListAll) > 0 {
			var xs []string
			for _, l := range s.ListAll {
				xs = append(xs, fmt.Sprintf("%.1f", l.Seconds))
			}
			listAll = strings.Join(xs, "/")
		}
		rss, hwm, sim := "-", "-", "-"
		if len(s.ServerMemory) > 0 {
			rss, hwm = mib(s.ServerMemory[0].RSSBytes), mib(s.ServerMemory[0].HWMBytes)
		}
		if len(s.SimMemory) > 0 {
			var t int64
			for _, m := range s.SimMemory {
				t += m.RSSBytes
			}
			sim = mib(t)
		}
		hostsPerSec := 0.0
		if s.RegisterSeconds > 0 {
			hostsPerSec = float64(s.NewHosts) / s.RegisterSeconds
		}
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.0f\t%.0f\t%.0f\t%.1f\t%s\t%s\t%.0f\t%.1f\t%.2f\t%.1f\t%.1f\t%.1f\t%.0f\t%s\t%s\t%s\t%s\t\n",
			s.Hosts, s.VMs, s.RegisterSeconds, hostsPerSec, s.Tokens.PerSecond, s.Heartbeat.ServerHeartbeatsPerSecond, s.Heartbeat.Latency.P99Ms,
			per(s.Heartbeat.CPU.ServerSeconds), per(s.Heartbeat.CPU.AgentSeconds),
			s.Create.PerSecond, s.Create.Latency.P99Ms, s.Get.Latency.P99Ms, s.List.Latency.P99Ms,
			s.Place.Latency.P50Ms, s.Place.Latency.P99Ms, s.PlaceToRunning.P99Ms, listAll, rss, hwm, sim)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	for _, s := range rep.Steps {
		fmt.Fprintf(w, "\n%d hosts:\n", s.Hosts)
		fmt.Fprintf(w, "  register: %d new hosts ready %.1f s after the simulator started (its own registrations took %.1f s); CPUs: %s\n",
			s.NewHosts, s.RegisterSeconds, s.SimRegisterSeconds, s.RegisterCPU)
		fmt.Fprintf(w, "  join tokens: %d, %.0f/s, p99 %.1f ms\n", s.Tokens.Count, s.Tokens.PerSecond, s.Tokens.Latency.P99Ms)
		h := s.Heartbeat
		fmt.Fprintf(w, "  heartbeat load over %.0f s: %.0f heartbeats/s and %.0f requests/s at the server; simulators: %d answered, %d failed, latency p50 %.1f p99 %.1f ms, late p99 %.1f ms; CPUs: %s\n",
			h.Seconds, h.ServerHeartbeatsPerSecond, h.ServerRequestsPerSecond, h.SimHeartbeats, h.SimErrors, h.Latency.P50Ms, h.Latency.P99Ms, h.Late.P99Ms, h.CPU)
		if s.Create.Count > 0 {
			fmt.Fprintf(w, "  creates: %d, %.0f/s, 202 p50 %.1f p99 %.1f ms; CPUs: %s\n", s.Create.Count, s.Create.PerSecond,
				s.Create.Latency.P50Ms, s.Create.Latency.P99Ms, s.Create.CPU)
			fmt.Fprintf(w, "  %d VMs running %.1f s after the creates began; CPUs after the last create: %s\n", s.Running, s.ConvergeSeconds, s.ConvergeCPU)
		}
		if s.Seeded > 0 {
			fmt.Fprintf(w, "  seeded straight into the store (not through the API): %d VMs in %.1f s; CPUs: %s\n", s.Seeded, s.Seed.Seconds, s.Seed.CPU)
			fmt.Fprintf(w, "  %d VMs running %.1f s after the seeding began; CPUs after the seeding: %s\n", s.SeedRunning, s.SeedConvergeSeconds, s.SeedConvergeCPU)
		}
		if s.CreateTimedOut {
			fmt.Fprintf(w, "  creates STOPPED at the time limit: %d of %d VMs\n", s.VMs, s.VMsWanted)
		}
		if s.CreateErrors > 0 {
			fmt.Fprintf(w, "  creates the server FAILED (5xx, asked again): %d\n", s.CreateErrors)
		}
		fmt.Fprintf(w, "  get: p50 %.2f p99 %.2f ms (%d); list of %d: p50 %.1f p99 %.1f ms (%d)\n", s.Get.Latency.P50Ms, s.Get.Latency.P99Ms, s.Get.Count,
			listPage, s.List.Latency.P50Ms, s.List.Latency.P99Ms, s.List.Count)
		fmt.Fprintf(w, "  placement (1 client): 202 p50 %.1f p99 %.1f ms, running p50 %.0f p99 %.0f ms (%d)\n", s.Place.Latency.P50Ms, s.Place.Latency.P99Ms,
			s.PlaceToRunning.P50Ms, s.PlaceToRunning.P99Ms, s.Place.Count)
		for _, l := range s.ListAll {
			fmt.Fprintf(w, "  vm list --all-projects: %.2f s, %d lines; the CLI: %.2f CPU-s, max RSS %s; CPUs: %s\n", l.Seconds, l.Lines,
				l.CLICPUSeconds, mib(l.CLIMaxRSSBytes), l.CPU)
		}
		for i, m := range s.ServerMemory {
			fmt.Fprintf(w, "  server %d: VmRSS %s, VmHWM %s\n", i+1, mib(m.RSSBytes), mib(m.HWMBytes))
		}
		g := s.ServerGo
		fmt.Fprintf(w, "  server Go: heap in use %s, live %s, stacks %s, from the OS %s, %d goroutines; etcd db %s\n",
			mib(g.HeapInuseBytes), mib(g.HeapAllocBytes), mib(g.StackInuseBytes), mib(g.SysBytes), g.Goroutines, mib(s.EtcdDBBytes))
		for i, m := range s.SimMemory {
			fmt.Fprintf(w, "  simulator %d: VmRSS %s, VmHWM %s\n", i+1, mib(m.RSSBytes), mib(m.HWMBytes))
		}
	}
	for _, e := range rep.ServerErrors {
		fmt.Fprintf(w, "server error: %s\n", e)
	}
	if rep.Error != "" {
		fmt.Fprintf(w, "\nTHE RUN ENDED EARLY %s\n", rep.Error)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tgoal\tmeasured\tmet")
	for _, t := range rep.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Goal, t.Measured, yesNo(t.Met))
	}
	return tw.Flush()
}
