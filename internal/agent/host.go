package agent

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/version"
)

// hostStatus describes this host for its heartbeat.
func (a *Agent) hostStatus() api.HostStatus {
	st := api.HostStatus{
		CPUs:         runtime.NumCPU(),
		MemoryMiB:    memTotalMiB(),
		Accel:        a.info.Accel,
		AccelReason:  a.info.AccelReason,
		QEMUVersion:  a.info.Version,
		AgentVersion: version.Version,
		Address:      a.cfg.Address,
		Drivers:      []string{a.driver.Name()},
		Warnings:     a.warnings(),
		Keeper:       a.keeperStatus(),
	}
	if c := a.info.Confinement; c.User != "" || c.Sandbox != "" || c.Cgroups != "" || c.Network != "" || len(c.Notes) > 0 {
		st.Confinement = &api.HostConfinement{User: c.User, Sandbox: c.Sandbox, Cgroups: c.Cgroups, Network: c.Network, Notes: c.Notes}
	}
	var fs syscall.Statfs_t
	if syscall.Statfs(a.cfg.StateDir, &fs) == nil {
		st.DiskTotalMiB = int64(fs.Blocks) * fs.Bsize >> 20
		st.DiskFreeMiB = int64(fs.Bavail) * fs.Bsize >> 20
	}
	return st
}

// memTotalMiB reads MemTotal from /proc/meminfo.
func memTotalMiB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb >> 10
		}
	}
	return 0
}
