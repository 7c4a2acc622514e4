package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/internal/qmp"
)

// What BenchmarkMigrate records of each run besides its wall time and
// downtime, to tell where the time went: the machine's load, QEMU's own
// account of the migration, how much CPU the two QEMUs got and how long
// their threads waited for one, and the CPU quota throttling of their
// cgroups.

// runStats is one run's account.
type runStats struct {
	load      string // /proc/loadavg's 1-, 5- and 15-minute load at the start
	mig       migStats
	src, dst  schedUse
	throttled [2]cgThrottle // source, target; zero outside a cgroup
	others    int           // tasks of other VMs in the VMs' parent cgroup at the start
}

// migStats is what the source's query-migrate answers once completed.
type migStats struct {
	Status    string `json:"status"`
	TotalTime int64  `json:"total-time"`
	SetupTime int64  `json:"setup-time"`
	Downtime  int64  `json:"downtime"`
	Throttle  int    `json:"cpu-throttle-percentage"`
	RAM       struct {
		Transferred    int64   `json:"transferred"`
		Mbps           float64 `json:"mbps"`
		DirtySyncCount int64   `json:"dirty-sync-count"`
		DirtyPagesRate int64   `json:"dirty-pages-rate"`
	} `json:"ram"`
}

func sourceStats(ctx context.Context, c *qmp.Client) (migStats, error) {
	var s migStats
	err := c.Execute(ctx, "query-migrate", nil, &s)
	return s, err
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// schedUse is the time a process's threads ran on a CPU and waited on a
// run queue for one (from /proc/PID/task/*/schedstat).
type schedUse struct{ run, wait time.Duration }

// schedWatch samples the threads of some processes every 20 ms, so the
// threads that end before the run does (QEMU's migration thread) count.
type schedWatch struct {
	pids  []int
	mu    sync.Mutex
	first map[string][2]int64 // by pid/tid: run, wait ns at the first sample
	last  map[string][2]int64
	stop  chan struct{}
	done  chan struct{}
}

func watchSched(pids ...int) *schedWatch {
	w := &schedWatch{pids: pids, first: map[string][2]int64{}, last: map[string][2]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	w.sample(true)
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				w.sample(false)
				return
			case <-time.After(20 * time.Millisecond):
				w.sample(false)
			}
		}
	}()
	return w
}

func (w *schedWatch) sample(start bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pid := range w.pids {
		dir := fmt.Sprintf("/proc/%d/task", pid)
		tasks, _ := os.ReadDir(dir)
		for _, t := range tasks {
			b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
			f := strings.Fields(string(b))
			if err != nil || len(f) < 2 {
				continue
			}
			run, _ := strconv.ParseInt(f[0], 10, 64)
			wait, _ := strconv.ParseInt(f[1], 10, 64)
			k := strconv.Itoa(pid) + "/" + t.Name()
			if _, ok := w.first[k]; !ok {
				if start {
					w.first[k] = [2]int64{run, wait}
				} else {
					w.first[k] = [2]int64{} // a thread born during the run
				}
			}
			w.last[k] = [2]int64{run, wait}
		}
	}
}

// use stops the watch and returns each process's use over it.
func (w *schedWatch) use() []schedUse {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]schedUse, len(w.pids))
	for i, pid := range w.pids {
		p := strconv.Itoa(pid) + "/"
		for k, l := range w.last {
			if strings.HasPrefix(k, p) {
				f := w.first[k]
				out[i].run += time.Duration(l[0] - f[0])
				out[i].wait += time.Duration(l[1] - f[1])
			}
		}
	}
	return out
}

// cgThrottle is a cgroup's CPU quota throttling: periods throttled and
// the time its tasks were held back.
type cgThrottle struct {
	periods int64
	time    time.Duration
}

// cpuStatFile is the cpu.stat of a VM's cgroup from its handle's cgroup
// paths (one a line): under v1 the cpu controller's, under v2 the one.
func cpuStatFile(paths string) string {
	for _, p := range strings.Split(paths, "\n") {
		if p == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "cpu.stat")); err == nil {
			if _, err := os.Stat(filepath.Join(p, "cpu.cfs_quota_us")); err == nil {
				return filepath.Join(p, "cpu.stat")
			}
			if _, err := os.Stat(filepath.Join(p, "cpu.max")); err == nil {
				return filepath.Join(p, "cpu.stat")
			}
		}
	}
	return ""
}

func readThrottle(file string) cgThrottle {
	var t cgThrottle
	if file == "" {
		return t
	}
	b, _ := os.ReadFile(file)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "nr_throttled":
			t.periods = n
		case "throttled_time": // v1, ns
			t.time = time.Duration(n)
		case "throttled_usec": // v2
			t.time = time.Duration(n) * time.Microsecond
		}
	}
	return t
}

func (t cgThrottle) since(before cgThrottle) cgThrottle {
	return cgThrottle{t.periods - before.periods, t.time - before.time}
}

// liftQuota removes the CPU quota of the cgroup whose cpu.stat is file.
func liftQuota(file string) error {
	dir := filepath.Dir(file)
	if _, err := os.Stat(filepath.Join(dir, "cpu.max")); err == nil {
		return os.WriteFile(filepath.Join(dir, "cpu.max"), []byte("max"), 0)
	}
	return os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte("-1"), 0)
}

// vmsCPUParent is the cgroup directory the driver puts its VMs' CPU
// cgroups in; "" without cgroups.
func vmsCPUParent(d *Driver) string {
	c := d.confinement().cgroups
	if c == nil {
		return ""
	}
	for _, p := range c.parents {
		if p.controller == "" || p.controller == "cpu" {
			return p.dir
		}
	}
	return ""
}

// otherVMTasks counts the tasks in the VMs' parent cgroup that are not in
// the skipped cgroups: other VMs competing for the parent's share of the
// CPU.
func otherVMTasks(parent string, skip ...string) int {
	if parent == "" {
		return 0
	}
	n := 0
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if !e.IsDir() || contains(skip, e.Name()) {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(parent, e.Name(), "tasks"))
		if b == nil {
			b, _ = os.ReadFile(filepath.Join(parent, e.Name(), "cgroup.threads"))
		}
		n += bytes.Count(b, []byte("\n"))
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (r runStats) String() string {
	m := r.mig
	return fmt.Sprintf("load %s, other VMs' tasks %d | migrate total %d ms setup %d ms downtime %d ms, %.0f Mbps, %.1f MiB in %d syncs, dirty %d pages/s, throttle %d%% | source ran %.2f s waited %.2f s, target ran %.2f s waited %.2f s | quota throttled source %d×/%.2f s, target %d×/%.2f s",
		r.load, r.others, m.TotalTime, m.SetupTime, m.Downtime, m.RAM.Mbps, float64(m.RAM.Transferred)/(1<<20), m.RAM.DirtySyncCount, m.RAM.DirtyPagesRate, m.Throttle,
		r.src.run.Seconds(), r.src.wait.Seconds(), r.dst.run.Seconds(), r.dst.wait.Seconds(),
		r.throttled[0].periods, r.throttled[0].time.Seconds(), r.throttled[1].periods, r.throttled[1].time.Seconds())
}

// benchEnv says whether the variable name is set to 1: the benchmark's
// switches for measuring one cause at a time.
func benchEnv(name string) bool { return os.Getenv(name) == "1" }
