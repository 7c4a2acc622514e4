package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// userHZ is the unit of /proc's CPU times: USER_HZ, 100 on Linux.
const userHZ = 100

// Stats samples the QEMU process of a running VM: its CPU time (user and
// system) and its resident memory, from /proc.
func (d *Driver) Stats(_ context.Context, h *hypervisor.Handle) (hypervisor.Stats, error) {
	if h.PID <= 0 || !processAlive(h.PID, h.PIDStart) {
		return hypervisor.Stats{}, fmt.Errorf("vm %s is not running: %w", h.UID, hypervisor.ErrNotRunning)
	}
	st, err := readProcStat(h.PID)
	if err != nil {
		return hypervisor.Stats{}, err
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/status")
	if err != nil {
		return hypervisor.Stats{}, fmt.Errorf("reading status of process %d: %w", h.PID, err)
	}
	rss, err := parseVmRSS(status)
	if err != nil {
		return hypervisor.Stats{}, err
	}
	return hypervisor.Stats{CPUSeconds: float64(st.UTime+st.STime) / userHZ, MemoryBytes: rss}, nil
}

// parseVmRSS reads "VmRSS: <n> kB" from /proc/<pid>/status.
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("parsing VmRSS %q", rest)
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmRSS %q: %w", rest, err)
			}
			return n << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in process status")
}
