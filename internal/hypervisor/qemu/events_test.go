package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// TestEventsCrashPoweroffAndReplayRealQEMU: with real QEMU, a kill -9 is a
// crash with the process's end in its reason, a guest that powers itself
// off is a guest poweroff, a stop that was asked for is requested; events
// reach a subscription made before Start whatever became of Start's
// context; and a new subscription replays the current state with the
// cause of the last stop, also after a restarted driver found the process
// gone.
func TestEventsCrashPoweroffAndReplayRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stateDir := t.TempDir()
	d := newTestDriver(t, stateDir)
	defer d.Close()
	uid := "3c1d5e7f-0a2b-4c4d-8e6f-7a8b9c0d1e2f"
	cfg := guestConfig(g, "events", uid)
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d, h)

	evctx, evcancel := context.WithCancel(ctx)
	defer evcancel()
	evch, err := d.Events(evctx, h)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(evch)
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Replay: true}, 5*time.Second)

	// Start under a context that ends when Start returns, as a
	// convergence's does: the VM's events do not end with it.
	sctx, scancel := context.WithCancel(ctx)
	if err := d.Start(sctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	scancel()
	waitLog(t, d, h, regexp.MustCompile(guest.ReadyMarker), 60*time.Second)
	pid := h.PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev := events.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseProcessExited, PID: pid}, 5*time.Second)
	if !strings.Contains(ev.Reason, "killed by signal 9") {
		t.Errorf("crash reason %q does not say how qemu ended", ev.Reason)
	}
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StateStopped {
		t.Fatalf("State after kill = %+v, %v", st, err)
	}

	// A subscription made after the crash learns of it.
	late := subscribe(t, evctx, d, h)
	late.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseProcessExited, PID: pid, Replay: true}, time.Second)

	// Started again: the replay is the new process, running.
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	running := subscribe(t, evctx, d, h)
	running.wait(t, hypervisor.StateEvent{State: hypervisor.StateRunning, PID: h.PID, Replay: true}, time.Second)
	waitLog(t, d, h, regexp.MustCompile(`(?s)`+guest.ReadyMarker+`.*`+guest.ReadyMarker), 60*time.Second)

	// The guest powers itself off: the ACPI button pressed behind the
	// driver's back, or the guest's own command where it has one.
	pid = h.PID
	byCommand := false
	if b, _ := d.ConsoleLog(ctx, h, 0); strings.Contains(string(b), guest.CommandsLine) {
		con, err := d.OpenConsole(ctx, h, "serial")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(con, "%s\n", guest.PoweroffCommand)
		defer con.Close()
		byCommand = true
	} else if err := d.execute(ctx, h, "system_powerdown"); err != nil {
		t.Fatal(err)
	}
	ev = events.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseGuestPoweroff, PID: pid}, 60*time.Second)
	if ev.Reason != reasonGuestPoweroff {
		t.Errorf("poweroff reason %q", ev.Reason)
	}
	if byCommand {
		waitLog(t, d, h, regexp.MustCompile(regexp.QuoteMeta(guest.PoweroffLine)), time.Second)
	} else {
		t.Logf("the guest in %s predates %s: its ACPI button was pressed instead", g.Dir, guest.PoweroffCommand)
	}
	if crashes := events.count(hypervisor.CauseProcessExited); crashes != 1 {
		t.Errorf("%d crash events, want the one kill", crashes)
	}

	// The agent goes away, the VM is killed meanwhile: a new driver's
	// Recover finds it gone, and its first subscriber hears of a crash.
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("third Start: %v", err)
	}
	pid = h.PID
	saved := *h
	d.Close()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for processAlive(pid, 0) {
		time.Sleep(20 * time.Millisecond)
	}
	d2 := newTestDriver(t, stateDir)
	defer d2.Close()
	if st, err := d2.Recover(ctx, &saved); err != nil || st.State != hypervisor.StateStopped {
		t.Fatalf("Recover of a killed vm = %+v, %v", st, err)
	}
	after := subscribe(t, evctx, d2, &saved)
	ev = after.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseProcessExited, PID: pid, Replay: true}, time.Second)
	if !strings.Contains(ev.Reason, "no agent was watching") {
		t.Errorf("reason of a crash nobody saw: %q", ev.Reason)
	}
	if err := d2.Destroy(ctx, &saved, false); err != nil {
		t.Fatal(err)
	}
}

func subscribe(t *testing.T, ctx context.Context, d *Driver, h *hypervisor.Handle) *eventLog {
	t.Helper()
	ch, err := d.Events(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	return collect(ch)
}

func (l *eventLog) count(cause hypervisor.Cause) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.evs {
		if ev.Cause == cause && !ev.Replay {
			n++
		}
	}
	return n
}

// fakeQMP is a QMP peer standing in for a QEMU whose guest is halted,
// which TCG cannot make happen: it answers query-status with its status
// and sends the events the test gives it.
type fakeQMP struct {
	t      *testing.T
	ln     net.Listener
	mu     sync.Mutex
	status string
	conns  []net.Conn
}

func newFakeQMP(t *testing.T, path, status string) *fakeQMP {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeQMP{t: t, ln: ln, status: status}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
	})
	go f.serve()
	return f
}

func (f *fakeQMP) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		go f.session(c)
	}
}

func (f *fakeQMP) session(c net.Conn) {
	f.send(c, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}`)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var cmd struct {
			Execute string `json:"execute"`
			ID      string `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &cmd) != nil {
			continue
		}
		switch cmd.Execute {
		case "query-status":
			f.mu.Lock()
			st := f.status
			f.mu.Unlock()
			f.send(c, fmt.Sprintf(`{"return": {"status": %q, "running": false}, "id": %q}`, st, cmd.ID))
		default:
			f.send(c, fmt.Sprintf(`{"return": {}, "id": %q}`, cmd.ID))
		}
	}
}

func (f *fakeQMP) send(c net.Conn, line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.Write([]byte(line + "\n"))
}

// event sends an event to every connection, after setting the status.
func (f *fakeQMP) event(status, name string) {
	f.mu.Lock()
	f.status = status
	conns := append([]net.Conn(nil), f.conns...)
	f.mu.Unlock()
	for _, c := range conns {
		f.send(c, fmt.Sprintf(`{"event": %q, "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}`, name))
	}
}

// TestHaltedGuestIsCrashed: QEMU keeps a guest that hit a KVM internal
// error, or panicked, alive but halted (query-status internal-error or
// guest-panicked). The driver reports it crashed with the cause and
// QEMU's own words from qemu.log, in State, in the replay of a new
// subscription, and as an event when it happens; never running or paused.
func TestHaltedGuestIsCrashed(t *testing.T) {
	dir := t.TempDir()
	// Its goroutines may log after the test: not to t.
	d := &Driver{cfg: Config{StateDir: dir}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		vms: map[string]*vm{}, subs: map[string]map[chan hypervisor.StateEvent]bool{}}
	defer d.Close()
	uid := "halted-1"
	vmDir := filepath.Join(dir, uid)
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// What QEMU wrote when KVM failed, as seen on a host whose /dev/kvm
	// opens but cannot run the guest.
	log := "--- polyvisor: starting /usr/bin/qemu-system-x86_64 at 2026-12-05T10:00:00Z\n" +
		"KVM internal error. Suberror: 1\n" +
		"extra data[0]: 0x0000000000000000\n" +
		"emulation failure\n" +
		"RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000663\n" +
		"ES =0000 00000000 0000ffff 00009300\n"
	if err := os.WriteFile(filepath.Join(vmDir, qemuLog), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	// A live process stands in for QEMU's, the fake peer for its QMP.
	proc := exec.Command("sleep", "300")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	st, err := readProcStat(proc.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(vmDir, qmpSock)
	qmpPeer := newFakeQMP(t, sock, runStateInternalError)
	h := &hypervisor.Handle{Version: hypervisor.HandleVersion, Driver: DriverName, UID: uid, Dir: vmDir,
		PID: proc.Process.Pid, PIDStart: st.Start, Extra: map[string]string{extraQMP: sock}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := d.State(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != hypervisor.StateCrashed || s.Cause != hypervisor.CauseInternalError || s.PID != h.PID {
		t.Fatalf("State of a vm halted on an internal error = %+v", s)
	}
	want := "qemu halted the vm on an internal error: KVM internal error. Suberror: 1; emulation failure"
	if s.Reason != want {
		t.Errorf("reason %q, want %q", s.Reason, want)
	}
	events := subscribe(t, ctx, d, h)
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateCrashed, Cause: hypervisor.CauseInternalError, PID: h.PID, Replay: true}, time.Second)

	// It happens while the driver watches: STOP, then a crashed event.
	qmpPeer.event("paused", "STOP")
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StatePaused, PID: h.PID}, 5*time.Second)
	qmpPeer.event(runStateGuestPanicked, "STOP")
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateCrashed, Cause: hypervisor.CauseGuestPanic, PID: h.PID}, 5*time.Second)
	if s, err := d.State(ctx, h); err != nil || s.State != hypervisor.StateCrashed || s.Cause != hypervisor.CauseGuestPanic {
		t.Fatalf("State of a panicked guest = %+v, %v", s, err)
	}
	// One process crashes once, whatever QEMU says next. The driver reads
	// QEMU's events in order: once the RESUME sent after the second panic
	// is heard, the second panic was handled too.
	qmpPeer.event(runStateGuestPanicked, "GUEST_PANICKED")
	qmpPeer.event(runStateGuestPanicked, "RESUME")
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateRunning, Reason: "resumed", PID: h.PID}, 5*time.Second)
	if n := events.count(hypervisor.CauseGuestPanic); n != 1 {
		t.Errorf("%d crash events for one panic", n)
	}
}

func TestExitText(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sh", "-c", "kill -9 $$"}, "killed by signal 9, killed"},
		{[]string{"sh", "-c", "exit 3"}, "exit status 3"},
		{[]string{"true"}, "exit status 0"},
	} {
		err := exec.Command(c.args[0], c.args[1:]...).Run()
		if got := exitText(err); got != c.want {
			t.Errorf("%v: %q, want %q", c.args, got, c.want)
		}
	}
}

func TestQEMULogLines(t *testing.T) {
	dir := t.TempDir()
	log := "--- polyvisor: starting qemu at 1\nold run's line\n" +
		"--- polyvisor: starting qemu at 2\n" +
		"2026-12-05T10:00:00.123456Z qemu-system-x86_64: terminating on signal 15 from pid 42 (kill)\n"
	os.WriteFile(filepath.Join(dir, qemuLog), []byte(log), 0o600)
	if got, want := lastLogLine(dir), `; qemu.log ends with "qemu-system-x86_64: terminating on signal 15 from pid 42 (kill)"`; got != want {
		t.Errorf("lastLogLine = %q, want %q", got, want)
	}
	if got := lastLogLine(t.TempDir()); got != "" {
		t.Errorf("lastLogLine without a log = %q", got)
	}
}
