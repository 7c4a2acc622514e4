package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cleanups runs undo steps in reverse order of registration. Every
// benchmark registers what it starts as soon as it started it, and runs the
// stack on every way out (success, error, Ctrl-C).
type cleanups struct{ fns []func() }

func (c *cleanups) add(f func()) { c.fns = append(c.fns, f) }

func (c *cleanups) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// proc is a child process of the benchmark: a polyvisor server or agent,
// or a bare QEMU. It runs in its own process group (so a Ctrl-C on the
// terminal reaches only the benchmark, which then stops it in order) and
// is killed by the kernel should the benchmark die without cleaning up.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// startProc starts bin with args, its output going to logPath.
func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening log of %s: %w", name, err)
	}
	defer logf.Close()
	// Never exec.CommandContext: the benchmark stops its children itself,
	// gracefully first, and not when some request's context ends.
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop asks the process to end with SIGTERM and kills it (and its group)
// after grace. It is safe to call more than once.
func (p *proc) stop(grace time.Duration) {
	if done, _ := p.exited(); done {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

// kill ends the process group at once.
func (p *proc) kill() {
	if done, _ := p.exited(); done {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// tail returns the last n bytes of the process's log, for error messages.
func (p *proc) tail(n int64) string { return tailFile(p.logPath, n) }

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	_, _ = f.ReadAt(b, off)
	return string(b)
}

// failure wraps err with the tail of the process's log.
func (p *proc) failure(err error) error {
	if errors.Is(err, context.Canceled) {
		return err // interrupted: the log says nothing about that
	}
	return fmt.Errorf("%w\n--- last lines of %s (%s) ---\n%s", err, p.name, p.logPath, p.tail(3000))
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// qemuPIDsUnder returns the live QEMU processes whose command line mentions
// dir: the VMs an agent started under a data dir, which run in their own
// session and outlive the agent by design.
func qemuPIDsUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("qemu-system")) || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// killQEMUsUnder kills the QEMUs left running under dir.
func killQEMUsUnder(dir string) int {
	pids := qemuPIDsUnder(dir)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(pids)
}

// Memory is a process's memory as the kernel accounts it.
type Memory struct {
	// RSSBytes is VmRSS: resident now.
	RSSBytes int64 `json:"rssBytes"`
	// HWMBytes is VmHWM: the peak resident size.
	HWMBytes int64 `json:"hwmBytes"`
}

// procMemory reads VmRSS and VmHWM from /proc/PID/status.
func procMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("reading memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	return parseProcStatus(f)
}

// parseProcStatus extracts VmRSS and VmHWM (given in kB) from the text of
// /proc/PID/status.
func parseProcStatus(r io.Reader) (Memory, error) {
	var m Memory
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return m, fmt.Errorf("parsing %s: unexpected value %q", key, val)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parsing %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSSBytes = kb << 10
		} else {
			m.HWMBytes = kb << 10
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("reading process status: %w", err)
	}
	if found != 2 {
		return m, errors.New("reading process status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// poll calls f every interval until it returns nil, ctx ends or timeout
// passes; the error then says what was awaited and f's last error.
func poll(ctx context.Context, timeout, interval time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		var fe *fatal
		if errors.As(err, &fe) {
			return fmt.Errorf("waiting for %s: %w", what, fe.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not within %v: %w", what, timeout, err)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
