package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// runningFromPidfile finds a QEMU that runs this VM although the handle
// does not know it: the agent died between spawning QEMU and saving the
// handle. QEMU writes its pid file once it is up; the process must be alive
// and its command line must name the VM's directory.
func runningFromPidfile(h *hypervisor.Handle) (pid int, start uint64, ok bool) {
	b, err := os.ReadFile(filepath.Join(h.Dir, pidFile))
	if err != nil {
		return 0, 0, false
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, 0, false
	}
	st, err := readProcStat(pid)
	if err != nil || st.State == 'Z' || st.State == 'X' {
		return 0, 0, false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte(h.UID)) {
		return 0, 0, false
	}
	return pid, st.Start, true
}

// adopt records a QEMU found through its pid file in the handle.
func (d *Driver) adopt(h *hypervisor.Handle) bool {
	pid, start, ok := runningFromPidfile(h)
	if !ok {
		return false
	}
	d.log.Warn("adopting a running qemu the handle did not record", "vm", h.UID, "pid", pid)
	h.PID, h.PIDStart = pid, start
	if err := saveHandle(h); err != nil {
		d.log.Warn("saving adopted handle", "vm", h.UID, "err", err)
	}
	return true
}
