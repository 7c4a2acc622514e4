package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux for
// every architecture Polyvisor runs on).
const clockTicks = 100

// CPUUse is where the machine's CPU time went during a phase, in
// CPU-seconds. Other is everything not ours: on a shared machine, the
// interference the figures suffered.
type CPUUse struct {
	WallSeconds   float64 `json:"wallSeconds"`
	ServerSeconds float64 `json:"serverSeconds"` // the server, its embedded etcd and the children it reaped
	AgentSeconds  float64 `json:"agentSeconds,omitempty"`
	BenchSeconds  float64 `json:"benchSeconds"` // this process and the children it reaped (bare QEMU)
	QEMUSeconds   float64 `json:"qemuSeconds,omitempty"`
	OtherSeconds  float64 `json:"otherSeconds"`
	IdleSeconds   float64 `json:"idleSeconds"`
}

// cpuSample is a snapshot of the counters CPUUse is computed from.
type cpuSample struct {
	at         time.Time
	busy, idle float64 // machine-wide, seconds
	server     float64
	agent      float64
	bench      float64
	qemu       map[int]float64 // live QEMUs under the benchmark's dir, by pid
}

// cpuMeter samples the benchmark's processes.
type cpuMeter struct {
	server, agent int    // pids; 0 when absent
	qemuDir       string // QEMUs whose command line mentions it are ours
}

func (m *cpuMeter) sample() cpuSample {
	s := cpuSample{at: time.Now(), qemu: map[int]float64{}}
	s.busy, s.idle = machineCPU()
	s.bench = procCPU(os.Getpid())
	if m.server > 0 {
		s.server = procCPU(m.server)
	}
	if m.agent > 0 {
		s.agent = procCPU(m.agent)
	}
	if m.qemuDir != "" {
		for _, pid := range qemuPIDsUnder(m.qemuDir) {
			s.qemu[pid] = procCPU(pid)
		}
	}
	return s
}

// since returns the use between an earlier sample and now. A QEMU that
// ended in between is counted by whoever reaped it (server or bench); one
// that started counts from zero.
func (m *cpuMeter) since(a cpuSample) CPUUse {
	b := m.sample()
	u := CPUUse{
		WallSeconds:   b.at.Sub(a.at).Seconds(),
		ServerSeconds: b.server - a.server,
		AgentSeconds:  b.agent - a.agent,
		BenchSeconds:  b.bench - a.bench,
		IdleSeconds:   b.idle - a.idle,
	}
	for pid, t := range b.qemu {
		u.QEMUSeconds += t - a.qemu[pid]
	}
	ours := u.ServerSeconds + u.AgentSeconds + u.BenchSeconds + u.QEMUSeconds
	u.OtherSeconds = max(b.busy-a.busy-ours, 0)
	return u
}

// String is a one-line summary of u, per wall second.
func (u CPUUse) String() string {
	if u.WallSeconds <= 0 {
		return ""
	}
	per := func(v float64) string { return fmt.Sprintf("%.2f", v/u.WallSeconds) }
	s := "server " + per(u.ServerSeconds)
	if u.AgentSeconds > 0 {
		s += ", agent " + per(u.AgentSeconds)
	}
	if u.QEMUSeconds > 0 {
		s += ", qemu " + per(u.QEMUSeconds)
	}
	return s + ", bench " + per(u.BenchSeconds) + ", others " + per(u.OtherSeconds) + ", idle " + per(u.IdleSeconds)
}

// machineCPU returns the machine's busy and idle CPU-seconds since boot
// from /proc/stat (iowait counts as idle).
func machineCPU() (busy, idle float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return parseStatCPU(string(line))
}

// parseStatCPU parses the "cpu ..." line of /proc/stat.
func parseStatCPU(line string) (busy, idle float64) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice]
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || i >= 8 {
			break
		}
		if i == 3 || i == 4 {
			idle += n
		} else {
			busy += n
		}
	}
	return busy / clockTicks, idle / clockTicks
}

// procCPU returns a process's CPU-seconds, its reaped children's included.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return parseProcStatCPU(string(b))
}

// parseProcStatCPU sums utime, stime, cutime and cstime of a
// /proc/PID/stat line.
func parseProcStatCPU(stat string) float64 {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	// After "pid (comm)": state is field 3; utime..cstime are 14..17.
	f := strings.Fields(stat[i+1:])
	if len(f) < 15 {
		return 0
	}
	sum := 0.0
	for _, v := range f[11:15] {
		n, _ := strconv.ParseFloat(v, 64)
		sum += n
	}
	return sum / clockTicks
}
