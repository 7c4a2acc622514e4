package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/simagent"
)

// simProc is a `polyvisor agent --simulate N` child process.
type simProc struct {
	*proc
	dir   string
	first int // number of its first host
	hosts int
}

func (s *simProc) statsFile() string { return filepath.Join(s.dir, "stats.json") }

// stats reads the simulator's latest counters (written every second).
func (s *simProc) stats() (simagent.Stats, error) {
	var st simagent.Stats
	b, err := os.ReadFile(s.statsFile())
	if err != nil {
		return st, fmt.Errorf("reading the simulator's stats: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("reading the simulator's stats: %w", err)
	}
	return st, nil
}

// simPrefix is the simulated hosts' name prefix.
const simPrefix = "sim-"

// grow adds simulated hosts up to size: it makes a join token for each
// (an administrator's requests, timed), starts a simulator for them, and
// waits until the server sees every host ready.
func (r *scaleRun) grow(ctx context.Context, st *ScaleStep, size int) error {
	add := size - r.hosts
	if add <= 0 {
		return nil
	}
	dir := filepath.Join(r.tmp, fmt.Sprintf("sim-%d", r.hosts+1))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("making the simulator's dir: %w", err)
	}
	fmt.Fprintf(r.log, "making %d join tokens with %d clients\n", add, r.opts.concurrency)
	tokens := make([]string, add)
	cpu0 := r.meter.sample()
	ds, wall, err := runConcurrent(ctx, add, r.opts.concurrency, func(ctx context.Context, w, i int) error {
		jt, err := r.clients[w].CreateJoinToken(ctx, api.JoinTokenCreate{})
		if err == nil {
			tokens[i] = jt.Token
		}
		return err
	})
	if err != nil {
		return r.failure(err)
	}
	st.Tokens = throughput(ds, r.opts.concurrency, wall)
	st.Tokens.CPU = r.meter.since(cpu0)
	tokFile := filepath.Join(dir, "join-tokens")
	if err := os.WriteFile(tokFile, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the join tokens: %w", err)
	}

	fmt.Fprintf(r.log, "starting polyvisor agent --simulate %d (hosts %s%05d..%s%05d)\n", add, simPrefix, r.hosts+1, simPrefix, size)
	args := []string{"agent", "--simulate", strconv.Itoa(add), "--simulate-first", strconv.Itoa(r.hosts + 1),
		"--simulate-prefix", simPrefix, "--server", strings.Join(r.urls, ","), "--join-token-file", tokFile,
		"--data-dir", dir, "--simulate-stats-file", filepath.Join(dir, "stats.json"),
		"--heartbeat-interval", r.opts.heartbeat.String(), "--simulate-register-concurrency", strconv.Itoa(r.opts.register),
		"--simulate-shared-conns", strconv.Itoa(r.opts.shared)}
	cpu0 = r.meter.sample()
	start := time.Now()
	p, err := startProc("polyvisor agent --simulate", filepath.Join(dir, "simulator.log"), r.bin, args...)
	if err != nil {
		return err
	}
	sim := &simProc{proc: p, dir: dir, first: r.hosts + 1, hosts: add}
	r.cl.add(func() { p.stop(30 * time.Second) })
	r.sims = append(r.sims, sim)
	r.meter.sims = append(r.meter.sims, p.pid())

	// Registered, as the simulator sees it (cheap to follow), then ready,
	// as the server sees it.
	err = poll(ctx, time.Hour, 250*time.Millisecond, fmt.Sprintf("%d simulated hosts to register", add), func() error {
		if err := r.simsAlive(); err != nil {
			return &fatal{err}
		}
		s, err := sim.stats()
		if err != nil {
			return err
		}
		if s.Registered < add {
			return fmt.Errorf("%d of %d registered", s.Registered, add)
		}
		st.SimRegisterSeconds = s.RegisterSeconds
		return nil
	})
	if err != nil {
		return r.failure(err)
	}
	err = poll(ctx, 10*time.Minute, time.Second, fmt.Sprintf("%d hosts ready", size), func() error {
		n, err := r.readyHosts(ctx)
		if err != nil {
			return err
		}
		if n < size {
			return fmt.Errorf("%d of %d ready", n, size)
		}
		return nil
	})
	if err != nil {
		return r.failure(err)
	}
	st.RegisterSeconds = time.Since(start).Seconds()
	st.RegisterCPU = r.meter.since(cpu0)
	st.NewHosts = add
	r.hosts = size
	fmt.Fprintf(r.log, "  %d hosts ready %.1f s after the simulator started (it registered them in %.1f s; tokens: %.0f/s; CPUs: %s)\n",
		size, st.RegisterSeconds, st.SimRegisterSeconds, st.Tokens.PerSecond, st.RegisterCPU)
	return nil
}

// readyHosts counts the simulated hosts the server has ready.
func (r *scaleRun) readyHosts(ctx context.Context) (int, error) {
	hosts, err := r.c.ListAllHosts(ctx, api.ListOptions{Limit: 1000})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hosts {
		if strings.HasPrefix(h.Name, simPrefix) && h.Status.State == api.HostReady {
			n++
		}
	}
	return n, nil
}

// simsAlive fails when a simulator exited.
func (r *scaleRun) simsAlive() error {
	for _, s := range r.sims {
		if done, werr := s.exited(); done {
			return s.failure(fmt.Errorf("the simulator exited: %v", werr))
		}
	}
	return nil
}

// simRunning sums the VMs the simulators have running.
func (r *scaleRun) simRunning() int {
	n := 0
	for _, s := range r.sims {
		if st, err := s.stats(); err == nil {
			n += st.Running
		}
	}
	return n
}

// idleLoad measures the heartbeat load: the fleet heartbeating and
// watching, nothing else asked of the server.
func (r *scaleRun) idleLoad(ctx context.Context, st *ScaleStep) error {
	// Let the registration's connections and first heartbeats pass.
	if err := sleepCtx(ctx, 2*r.opts.heartbeat); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "measuring the heartbeat load for %v\n", r.opts.idle)
	text0, err := r.metrics(ctx)
	if err != nil {
		return r.failure(err)
	}
	sims0 := r.simStats()
	cpu0 := r.meter.sample()
	stopProf := r.profile(ctx, fmt.Sprintf("%d-hosts-idle", st.Hosts), r.opts.idle)
	err = sleepCtx(ctx, r.opts.idle)
	stopProf()
	if err != nil {
		return err
	}
	cpu := r.meter.since(cpu0)
	sims1 := r.simStats()
	text1, err := r.metrics(ctx)
	if err != nil {
		return r.failure(err)
	}
	h := HeartbeatPhase{Seconds: cpu.WallSeconds, CPU: cpu}
	h.ServerHeartbeatsPerSecond = (sumRequests(text1, heartbeatRoute) - sumRequests(text0, heartbeatRoute)) / cpu.WallSeconds
	h.ServerRequestsPerSecond = (sumRequests(text1, "") - sumRequests(text0, "")) / cpu.WallSeconds
	for i := range sims1 {
		h.SimHeartbeats += sims1[i].Heartbeats - sims0[i].Heartbeats
		h.SimErrors += sims1[i].HeartbeatErrors - sims0[i].HeartbeatErrors
		h.Latency = worse(h.Latency, sims1[i].Heartbeat)
		h.Late = worse(h.Late, sims1[i].HeartbeatLate)
	}
	st.Heartbeat = h
	fmt.Fprintf(r.log, "  %.0f heartbeats/s at the server (%.0f requests/s in all), p99 %.1f ms, %d errors; CPUs: %s\n",
		h.ServerHeartbeatsPerSecond, h.ServerRequestsPerSecond, h.Latency.P99Ms, h.SimErrors, cpu)
	return nil
}

// heartbeatRoute is the heartbeat's route as /metrics labels it.
const heartbeatRoute = "PUT /v1/agent/hosts/{name}/status"

// worse keeps the larger figures of two latency summaries (of two
// simulators).
func worse(a, b simagent.Latency) simagent.Latency {
	return simagent.Latency{Samples: a.Samples + b.Samples, P50Ms: max(a.P50Ms, b.P50Ms), P99Ms: max(a.P99Ms, b.P99Ms), MaxMs: max(a.MaxMs, b.MaxMs)}
}

func (r *scaleRun) simStats() []simagent.Stats {
	out := make([]simagent.Stats, len(r.sims))
	for i, s := range r.sims {
		out[i], _ = s.stats()
	}
	return out
}

// sumRequests sums polyvisor_api_requests_total over every status code of
// route, or of every route when route is empty.
func sumRequests(text, route string) float64 {
	sum := 0.0
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, "polyvisor_api_requests_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || (route != "" && !strings.Contains(labels, `route="`+route+`"`)) {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			sum += v
		}
	}
	return sum
}

// goMemoryOf reads the Go memory statistics of a /metrics text.
func goMemoryOf(text string) GoMemory {
	var g GoMemory
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
	return g
}

// scrapeMetricsAuth scrapes a server's /metrics over its API, as a
// superadmin.
func scrapeMetricsAuth(ctx context.Context, c *client.Client, base, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", fmt.Errorf("scraping metrics: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("scraping metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scraping metrics: %s %v", resp.Status, err)
	}
	return string(b), nil
}

// profile saves the server's CPU profile over d (up to 60 s) from the
// phase starting now, and its heap profile at the end, under
// --profile; it returns a function that waits for them.
func (r *scaleRun) profile(ctx context.Context, name string, d time.Duration) (wait func()) {
	if r.opts.profile == "" || r.srv == nil {
		return func() {}
	}
	d = min(max(d, time.Second), time.Minute)
	base := r.pprofBase()
	if base == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := os.MkdirAll(r.opts.profile, 0o755); err != nil {
			fmt.Fprintf(r.log, "  profile: %v\n", err)
			return
		}
		for _, p := range []struct{ url, file string }{
			{fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(d.Seconds())), name + ".cpu.pprof"},
			{base + "/debug/pprof/heap", name + ".heap.pprof"},
		} {
			if err := fetchTo(ctx, p.url, filepath.Join(r.opts.profile, p.file)); err != nil {
				fmt.Fprintf(r.log, "  profile %s: %v\n", p.file, err)
			}
		}
	}()
	return func() { <-done }
}

// pprofBase is the URL of the server's pprof listener, or "".
func (r *scaleRun) pprofBase() string {
	if r.opts.profile == "" || r.srv == nil {
		return ""
	}
	for i, a := range r.srv.cmd.Args {
		if a == "--debug-pprof-listen" && i+1 < len(r.srv.cmd.Args) {
			return "http://" + r.srv.cmd.Args[i+1]
		}
	}
	return ""
}

// heapProfile saves the server's heap profile now, under --profile.
func (r *scaleRun) heapProfile(ctx context.Context, name string) {
	if base := r.pprofBase(); base != "" {
		if err := fetchTo(ctx, base+"/debug/pprof/heap", filepath.Join(r.opts.profile, name+".heap.pprof")); err != nil {
			fmt.Fprintf(r.log, "  profile %s: %v\n", name, err)
		}
	}
}

func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if _, err := io.Copy(w, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func execCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, bin, args...)
}

// fleetMeter samples the CPU of the servers and the simulators: the
// servers' figures go to CPUUse.ServerSeconds, the simulators' to
// AgentSeconds.
type fleetMeter struct {
	servers, sims []int
}

type fleetSample struct {
	at                        time.Time
	busy, idle, servers, sims float64
	bench                     float64
}

func (m *fleetMeter) sample() fleetSample {
	s := fleetSample{at: time.Now(), bench: procCPU(os.Getpid())}
	s.busy, s.idle = machineCPU()
	for _, p := range m.servers {
		s.servers += procCPU(p)
	}
	for _, p := range m.sims {
		s.sims += procCPU(p)
	}
	return s
}

func (m *fleetMeter) since(a fleetSample) CPUUse {
	b := m.sample()
	u := CPUUse{
		WallSeconds: b.at.Sub(a.at).Seconds(), ServerSeconds: b.servers - a.servers, AgentSeconds: b.sims - a.sims,
		BenchSeconds: b.bench - a.bench, IdleSeconds: b.idle - a.idle,
	}
	u.OtherSeconds = max(b.busy-a.busy-u.ServerSeconds-u.AgentSeconds-u.BenchSeconds, 0)
	return u
}
