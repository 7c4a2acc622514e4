package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// GoMemory is the Go runtime's view of the server's memory, from the
// go_memstats_* series of its /metrics.
type GoMemory struct {
	HeapInuseBytes    int64 `json:"heapInuseBytes"`
	HeapAllocBytes    int64 `json:"heapAllocBytes"`
	HeapIdleBytes     int64 `json:"heapIdleBytes"`
	HeapReleasedBytes int64 `json:"heapReleasedBytes"`
	StackInuseBytes   int64 `json:"stackInuseBytes"`
	// SysBytes is all the memory the Go runtime obtained from the OS.
	SysBytes   int64 `json:"sysBytes"`
	Goroutines int64 `json:"goroutines"`
}

// MemoryPhase is the server's memory with VMs stopped VMs stored, read
// right after the agent converged and again after Settle of idling.
type MemoryPhase struct {
	VMs    int      `json:"vms"`
	Server Memory   `json:"server"`
	Go     GoMemory `json:"go"`
	// SettledServer and SettledGo are read after Settle without requests
	// from the benchmark (the agent still heartbeats).
	SettleSeconds float64  `json:"settleSeconds"`
	SettledServer Memory   `json:"settledServer"`
	SettledGo     GoMemory `json:"settledGo"`
	Agent         Memory   `json:"agent"`
	EtcdDBBytes   int64    `json:"etcdDBBytes"`
	ServerAtStart Memory   `json:"serverAtStart"` // before any VM was created
}

// readGoMemory scrapes the server's Go memory statistics.
func (r *apiRun) readGoMemory(ctx context.Context) (GoMemory, error) {
	var g GoMemory
	text, err := scrapeMetrics(ctx, r.srv.local, "http://polyvisor")
	if err != nil {
		return g, err
	}
	for series, dst := range map[string]*int64{
		"go_memstats_heap_inuse_bytes":    &g.HeapInuseBytes,
		"go_memstats_heap_alloc_bytes":    &g.HeapAllocBytes,
		"go_memstats_heap_idle_bytes":     &g.HeapIdleBytes,
		"go_memstats_heap_released_bytes": &g.HeapReleasedBytes,
		"go_memstats_stack_inuse_bytes":   &g.StackInuseBytes,
		"go_memstats_sys_bytes":           &g.SysBytes,
		"go_goroutines":                   &g.Goroutines,
	} {
		if v, ok := metricValue(text, series); ok {
			*dst = int64(v)
		}
	}
	return g, nil
}

// memory reads the server's and the agent's memory, the server's Go
// memory statistics and the size of its etcd database; then, after
// opts.settle, the server's again.
func (r *apiRun) memory(ctx context.Context, rep *APIReport) error {
	m := &rep.Memory
	m.VMs = r.opts.memoryVMs
	var err error
	if m.Server, err = procMemory(r.srv.pid()); err != nil {
		return err
	}
	if m.Agent, err = procMemory(r.agent.pid()); err != nil {
		return err
	}
	if m.Go, err = r.readGoMemory(ctx); err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Join(r.srv.dataDir, "etcd", "member", "snap", "db")); err == nil {
		m.EtcdDBBytes = fi.Size()
	}
	fmt.Fprintf(r.log, "  server with %d VMs: VmRSS %s, VmHWM %s, Go heap in use %s\n", m.VMs, mib(m.Server.RSSBytes), mib(m.Server.HWMBytes), mib(m.Go.HeapInuseBytes))
	if r.opts.settle <= 0 {
		return nil
	}
	fmt.Fprintf(r.log, "  letting the server idle for %v\n", r.opts.settle)
	t := time.NewTimer(r.opts.settle)
	select {
	case <-ctx.Done():
		t.Stop()
		return fmt.Errorf("waiting for the server to settle: %w", ctx.Err())
	case <-t.C:
	}
	m.SettleSeconds = r.opts.settle.Seconds()
	if m.SettledServer, err = procMemory(r.srv.pid()); err != nil {
		return err
	}
	if m.SettledGo, err = r.readGoMemory(ctx); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "  after %v: VmRSS %s, Go heap in use %s\n", r.opts.settle, mib(m.SettledServer.RSSBytes), mib(m.SettledGo.HeapInuseBytes))
	return nil
}

// writeMemory prints the memory part of the API report.
func writeMemory(w io.Writer, m MemoryPhase) {
	line := func(when string, p Memory, g GoMemory) {
		fmt.Fprintf(w, "server %s: VmRSS %s, VmHWM %s; Go: heap in use %s (live objects %s, idle %s of which released %s), stacks %s, obtained from the OS %s; %d goroutines\n",
			when, mib(p.RSSBytes), mib(p.HWMBytes), mib(g.HeapInuseBytes), mib(g.HeapAllocBytes), mib(g.HeapIdleBytes), mib(g.HeapReleasedBytes),
			mib(g.StackInuseBytes), mib(g.SysBytes), g.Goroutines)
	}
	line(fmt.Sprintf("with %d stopped VMs", m.VMs), m.Server, m.Go)
	if m.SettleSeconds > 0 {
		line(fmt.Sprintf("%.0f s later, idle", m.SettleSeconds), m.SettledServer, m.SettledGo)
	}
	fmt.Fprintf(w, "server at start (no VMs): VmRSS %s; agent: VmRSS %s, VmHWM %s; etcd db file %s\n\n",
		mib(m.ServerAtStart.RSSBytes), mib(m.Agent.RSSBytes), mib(m.Agent.HWMBytes), mib(m.EtcdDBBytes))
}
