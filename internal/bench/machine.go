package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor/qemu"
)

// Machine describes where a benchmark ran.
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpuModel"`
	MemTotal    string `json:"memTotal"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"goVersion"`
	QEMUVersion string `json:"qemuVersion"`
	// KVM is true when guests run under KVM here: the accelerator probe
	// ran a guest under it (a /dev/kvm that only opens does not count).
	KVM         bool   `json:"kvm"`
	AccelReason string `json:"accelReason"`
	Date        string `json:"date"`
	// LoadStart and LoadEnd are /proc/loadavg's 1, 5 and 15 minute load
	// averages when the benchmark began and ended: the machine may be
	// shared, and a benchmark on 2 CPUs feels every other busy process.
	LoadStart string `json:"loadStart"`
	LoadEnd   string `json:"loadEnd"`
}

// loadAvg returns the three load averages of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// describeMachine gathers Machine; what it cannot read stays empty.
func describeMachine(ctx context.Context) Machine {
	m := Machine{
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Date:      time.Now().UTC().Format(time.RFC3339),
		LoadStart: loadAvg(),
	}
	m.CPUModel = firstField("/proc/cpuinfo", "model name")
	m.MemTotal = firstField("/proc/meminfo", "MemTotal")
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.CommandContext(ctx, "qemu-system-x86_64", "--version").Output(); err == nil {
		m.QEMUVersion, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	if c, err := qemu.DecideAccel(ctx, qemu.ProbeConfig{Want: qemu.AccelAuto, QEMUBinary: "qemu-system-x86_64"}); err == nil {
		m.KVM, m.AccelReason = c.Accel == qemu.AccelKVM, c.Reason
	}
	return m
}

// firstField returns the value of the first "key: value" line of a /proc
// file whose key is key.
func firstField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
