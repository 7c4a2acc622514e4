package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Target is one goal a benchmark checks.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// API targets.
const (
	targetCreatesPerSec  = 1000
	targetEtcdFraction   = 0.5
	targetGetP99Ms       = 5
	targetListP99Ms      = 50
	targetServerRSSBytes = 500 << 20
)

// apiTargets checks the API report against its targets. Latency targets are
// judged on one client (the latency of a request, not of a queue); the
// loaded figures are reported beside them.
func apiTargets(rep *APIReport) []Target {
	var ts []Target
	c := rep.Create.PerSecond
	ts = append(ts, Target{
		Name: "creates/s", Goal: fmt.Sprintf(">= %d", targetCreatesPerSec),
		Measured: fmt.Sprintf("%.0f", c), Met: c >= targetCreatesPerSec,
	})
	if put := rep.Etcd.Put.PerSecond; put > 0 {
		ts = append(ts, Target{
			Name: "creates/s vs raw etcd puts/s", Goal: fmt.Sprintf(">= %.0f%%", targetEtcdFraction*100),
			Measured: fmt.Sprintf("%.0f%% (%.0f of %.0f)", 100*c/put, c, put), Met: c >= targetEtcdFraction*put,
		})
	}
	if g, ok := findRead(rep.Reads, "GET /v1/vms/{name}", rep.Create.ToVMs, 1); ok {
		ts = append(ts, Target{
			Name: fmt.Sprintf("p99 GET /v1/vms/{name} (%d VMs, 1 client)", g.VMs), Goal: fmt.Sprintf("< %d ms", targetGetP99Ms),
			Measured: fmt.Sprintf("%.2f ms", g.Latency.P99Ms), Met: g.Latency.P99Ms < targetGetP99Ms,
		})
	}
	if l, ok := findRead(rep.Reads, fmt.Sprintf("GET /v1/vms?limit=%d", listPage), rep.Create.ToVMs, 1); ok {
		ts = append(ts, Target{
			Name: fmt.Sprintf("p99 GET /v1/vms?limit=%d (%d VMs, 1 client)", listPage, l.VMs), Goal: fmt.Sprintf("< %d ms", targetListP99Ms),
			Measured: fmt.Sprintf("%.1f ms", l.Latency.P99Ms), Met: l.Latency.P99Ms < targetListP99Ms,
		})
	}
	if m := rep.Memory; m.VMs > 0 {
		ts = append(ts, Target{
			Name: fmt.Sprintf("server VmRSS with %d stopped VMs", m.VMs), Goal: "< 500 MiB",
			Measured: mib(m.Server.RSSBytes), Met: m.Server.RSSBytes > 0 && m.Server.RSSBytes < targetServerRSSBytes,
		})
	}
	return ts
}

func findRead(rs []ReadPhase, route string, vms, conc int) (ReadPhase, bool) {
	for _, r := range rs {
		if r.Route == route && r.VMs == vms && r.Concurrency == conc {
			return r, true
		}
	}
	return ReadPhase{}, false
}

// mib formats a byte count in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func yesNo(met bool) string {
	if met {
		return "yes"
	}
	return "NO"
}

// cpuColumns formats CPU use per wall second as tab-separated columns:
// server, agent, bench, others, idle.
func cpuColumns(u CPUUse) string {
	if u.WallSeconds <= 0 {
		return "-\t-\t-\t-\t-"
	}
	per := func(v float64) string { return fmt.Sprintf("%.2f", v/u.WallSeconds) }
	return strings.Join([]string{per(u.ServerSeconds), per(u.AgentSeconds), per(u.BenchSeconds), per(u.OtherSeconds), per(u.IdleSeconds)}, "\t")
}

// others formats the CPUs other processes kept busy during a phase.
func others(u CPUUse) string {
	if u.WallSeconds <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", u.OtherSeconds/u.WallSeconds)
}

func writeMachine(w io.Writer, m Machine) {
	fmt.Fprintf(w, "Machine: %d CPUs (%s), %s RAM, Linux %s, %s, %s, KVM %v (%s), %s\n",
		m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.GoVersion, m.QEMUVersion, m.KVM, m.AccelReason, m.Date)
	fmt.Fprintf(w, "Load average at start: %s; at end: %s\n", m.LoadStart, m.LoadEnd)
}

func (rep *LifecycleReport) writeText(w io.Writer) error {
	writeMachine(w, rep.Machine)
	fmt.Fprintf(w, "\nPolyvisor: POST /v1/vms sent -> marker in console.log. Bare: qemu started -> marker in its serial file.\n")
	fmt.Fprintf(w, "Both files polled every %.0f ms. Times in ms. \"up\" = serial file first seen, \"guest\" = up -> marker.\n", rep.PollEveryMs)
	fmt.Fprintf(w, "\"others\" = CPUs busy with processes not the benchmark's during that boot (of %d): interference on a shared machine.\n\n", rep.Machine.CPUs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	exact := rep.Exact != nil
	head := "round\torder\tpolyvisor\t202\tup\tguest\tdelete\tothers\tbare\tup\tguest\tothers\tratio\t"
	if exact {
		head += "exact-args\tup\tguest\t"
	}
	fmt.Fprintln(tw, head)
	row := func(label string, r LifecycleRound) {
		ratio := 0.0
		if r.Bare.TotalMs > 0 {
			ratio = r.Polyvisor.TotalMs / r.Bare.TotalMs
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t%s\t%.0f\t%.0f\t%.0f\t%s\t%.3f\t", label, r.Order,
			r.Polyvisor.TotalMs, r.Polyvisor.AcceptedMs, r.Polyvisor.QEMUUpMs, r.Polyvisor.GuestMs, r.Polyvisor.DeleteMs, others(r.Polyvisor.CPU),
			r.Bare.TotalMs, r.Bare.QEMUUpMs, r.Bare.GuestMs, others(r.Bare.CPU), ratio)
		if exact && r.Exact != nil {
			fmt.Fprintf(tw, "%.0f\t%.0f\t%.0f\t", r.Exact.TotalMs, r.Exact.QEMUUpMs, r.Exact.GuestMs)
		}
		fmt.Fprintln(tw)
	}
	row("warm-up", rep.Warmup)
	for _, r := range rep.Rounds {
		row(fmt.Sprint(r.Round), r)
	}
	row("median", LifecycleRound{Polyvisor: rep.Polyvisor, Bare: rep.Bare, Exact: rep.Exact})
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n(the median row's ratio column is median(polyvisor)/median(bare); its other columns are per-column medians)\n")
	fmt.Fprintf(w, "\nmedian(polyvisor) / median(bare) = %.0f / %.0f = %.3fx   target <= %.2fx: %s\n",
		rep.Polyvisor.TotalMs, rep.Bare.TotalMs, rep.Ratio, rep.Target, map[bool]string{true: "met", false: "MISSED"}[rep.Met])
	if len(rep.BareArgs) > 0 {
		fmt.Fprintf(w, "\nbare:      %s\n", strings.Join(rep.BareArgs, " "))
	}
	if len(rep.PolyvisorArgs) > 0 {
		fmt.Fprintf(w, "polyvisor: %s\n", strings.Join(rep.PolyvisorArgs, " "))
	}
	if len(rep.ExactArgs) > 0 {
		fmt.Fprintf(w, "exact-args (diagnostic, run third in each round): %s\n", strings.Join(rep.ExactArgs, " "))
	}
	return nil
}

func (rep *APIReport) writeText(w io.Writer) error {
	writeMachine(w, rep.Machine)
	fmt.Fprintf(w, "API over %s, %d concurrent clients for creates; etcd: %s\n\n", rep.Transport, rep.Concurrency, rep.Etcd.Source)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "what\tVMs\tclients\tcount\tper s\tp50 ms\tp90 ms\tp99 ms\tmax ms\t\tCPUs: server\tagent\tbench\tothers\tidle\t")
	line := func(what string, vms int, t Throughput) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t\t%s\t\n", what, vms, t.Concurrency, t.Count, t.PerSecond,
			t.Latency.P50Ms, t.Latency.P90Ms, t.Latency.P99Ms, t.Latency.MaxMs, cpuColumns(t.CPU))
	}
	line("POST /v1/vms (202)", rep.Create.ToVMs, rep.Create.Throughput)
	line(fmt.Sprintf("etcd put (%d B VM JSON)", rep.Etcd.PayloadBytes), rep.Create.ToVMs, rep.Etcd.Put)
	line(fmt.Sprintf("etcd txn (VM + %d B op)", rep.Etcd.OpPayloadBytes), rep.Create.ToVMs, rep.Etcd.Txn)
	for _, r := range rep.Reads {
		line(r.Route, r.VMs, r.Throughput)
	}
	if rep.Grow.Count > 0 {
		line(fmt.Sprintf("POST /v1/vms (%d->%d)", rep.Grow.FromVMs, rep.Grow.ToVMs), rep.Grow.ToVMs, rep.Grow.Throughput)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n(CPUs: CPU-seconds per wall second used by each during the batch; the machine has %d)\n", rep.Machine.CPUs)
	for _, ph := range []CreatePhase{rep.Create, rep.Grow} {
		if ph.Count == 0 {
			continue
		}
		if ph.Converged {
			fmt.Fprintf(w, "agent reported all %d VMs stopped %.1f s after the creates %d->%d began (CPUs meanwhile: %s)\n",
				ph.ToVMs, ph.ConvergeSeconds, ph.FromVMs, ph.ToVMs, ph.ConvergeCPU)
		} else {
			fmt.Fprintf(w, "agent STALLED after the creates %d->%d: %d of %d VMs reported stopped, none more in the last %v of waiting\n",
				ph.FromVMs, ph.ToVMs, ph.Stopped, ph.ToVMs, stallWindow)
		}
	}
	fmt.Fprintln(w)
	writeMemory(w, rep.Memory)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tgoal\tmeasured\tmet")
	for _, t := range rep.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Goal, t.Measured, yesNo(t.Met))
	}
	return tw.Flush()
}
