package keeper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Now is CLOCK_BOOTTIME: the keeper's clock, and the one the agent stamps
// its heartbeats with. Unlike CLOCK_MONOTONIC it runs while the host is
// suspended, so a host that wakes after T_fence finds its keeper due.
func Now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic(fmt.Sprintf("reading CLOCK_BOOTTIME: %v", err))
	}
	return time.Duration(ts.Nano())
}

// ProcStart reads a live process's start time (field 22 of
// /proc/<pid>/stat, clock ticks since boot); a zombie has none.
func ProcStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("reading stat of process %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing stat of process %d: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parsing stat of process %d: too few fields", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// openProc opens a pidfd on p's process and checks, after opening it,
// that the PID still names the process that started at p.Start: from
// then on the pidfd names that process alone, whatever becomes of its PID.
func openProc(p Proc) (int, error) {
	if p.PID <= 1 || p.PID == os.Getpid() {
		return -1, fmt.Errorf("vm %s: pid %d is not a vm's process", p.Name, p.PID)
	}
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return -1, fmt.Errorf("vm %s: opening a pidfd on process %d: %w", p.Name, p.PID, err)
	}
	start, err := ProcStart(p.PID)
	if err == nil && start != p.Start {
		err = fmt.Errorf("process %d started at %d, not at %d: not the vm's process", p.PID, start, p.Start)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("vm %s: %w", p.Name, err)
	}
	return fd, nil
}

// killAll sends SIGKILL through every pidfd at once, then waits up to
// wait for those processes to be gone. It returns the indexes that could
// not be killed.
func killAll(fds []int, wait time.Duration) (failed map[int]error) {
	failed = map[int]error{}
	for i, fd := range fds {
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			failed[i] = fmt.Errorf("killing: %w", err)
		}
	}
	// A pidfd turns readable when its process has exited.
	deadline := time.Now().Add(wait)
	for i, fd := range fds {
		if _, bad := failed[i]; bad {
			continue
		}
		for {
			left := time.Until(deadline)
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, int(max(left.Milliseconds(), 0)))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n == 0 {
				failed[i] = fmt.Errorf("still running %v after SIGKILL (%v)", wait, err)
			}
			break
		}
	}
	return failed
}

func closeFD(fd int) { unix.Close(fd) }
