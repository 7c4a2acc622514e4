package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; it is 100 on
// every Linux architecture Polyvisor runs on.
const clockTicks = 100

// procStat is what Polyvisor reads from /proc/<pid>/stat.
type procStat struct {
	State byte   // field 3: R, S, D, Z, ...
	Start uint64 // field 22: start time in clock ticks since boot
	// UTime and STime are the CPU time spent in user and kernel mode, in
	// clock ticks.
	UTime, STime uint64
}

// readProcStat parses /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, fmt.Errorf("reading stat of process %d: %w", pid, err)
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("parsing process stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("parsing process stat: too few fields")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parsing process start time: %w", err)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, errors.New("parsing process cpu times")
	}
	return procStat{State: f[0][0], Start: start, UTime: utime, STime: stime}, nil
}

// processAlive reports whether pid is a live (not zombie) process that
// started at start (clock ticks since boot); start 0 skips that check.
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := readProcStat(pid)
	if err != nil {
		return false
	}
	if st.State == 'Z' || st.State == 'X' {
		return false
	}
	return start == 0 || st.Start == start
}

// killProcess sends sig to pid if it is still the process that started at
// start, so a reused PID is never signalled.
func killProcess(pid int, start uint64, sig syscall.Signal) error {
	if !processAlive(pid, start) {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling process %d: %w", pid, err)
	}
	return nil
}

var (
	bootOnce sync.Once
	bootTime time.Time
)

// startedAt converts a start time in clock ticks since boot to wall time.
func startedAt(ticks uint64) time.Time {
	bootOnce.Do(func() {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "btime "); ok {
				if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					bootTime = time.Unix(s, 0)
				}
			}
		}
	})
	if bootTime.IsZero() || ticks == 0 {
		return time.Time{}
	}
	return bootTime.Add(time.Duration(ticks) * time.Second / clockTicks)
}
