package qemu

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// Tests in this file run real QEMU (under TCG here) with the test guest.

func newTestDriver(t testing.TB, stateDir string) *Driver {
	t.Helper()
	d, err := New(Config{
		StateDir: stateDir,
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RunDir:   filepath.Join(os.TempDir(), "polyvisor-test-run"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func guestConfig(g guest.Paths, name, uid string) hypervisor.VMConfig {
	return hypervisor.VMConfig{
		Name: name, UID: uid, VCPUs: 1, MemoryMiB: 256,
		Disks:   []hypervisor.DiskConfig{{Name: "root", BackingFile: g.Disk}},
		NICs:    []hypervisor.NICConfig{{Network: "user"}},
		Kernel:  g.Kernel,
		Initrd:  g.Initrd,
		Cmdline: guest.Cmdline,
	}
}

// cleanupVM kills the VM's QEMU if a failed test left it running.
func cleanupVM(t *testing.T, d *Driver, h *hypervisor.Handle) {
	t.Cleanup(func() {
		if processAlive(h.PID, h.PIDStart) {
			d.Stop(context.Background(), h, hypervisor.StopOptions{Force: true})
		}
	})
}

// waitLog polls the console log until it matches re, and returns the match.
func waitLog(t *testing.T, d *Driver, h *hypervisor.Handle, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := d.ConsoleLog(context.Background(), h, 0)
		if err != nil {
			t.Fatal(err)
		}
		if m := re.FindStringSubmatch(string(b)); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("console log did not match %q within %v; tail:\n%s", re, timeout, tail(b, 1500))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

var tickRE = regexp.MustCompile(`polyvisor-tick (\d+)`)

// lastTick is the highest heartbeat number in the console log.
func lastTick(t *testing.T, d *Driver, h *hypervisor.Handle) int {
	b, err := d.ConsoleLog(context.Background(), h, 4096)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range tickRE.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.Atoi(m[1])
		n = max(n, v)
	}
	return n
}

// qemuProcesses counts QEMU processes whose command line mentions uid.
func qemuProcesses(t *testing.T, uid string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmd, []byte("qemu-system")) || !bytes.Contains(cmd, []byte(uid)) {
			continue
		}
		if processAlive(pid, 0) {
			n++
		}
	}
	return n
}

// eventLog collects StateEvents in the background.
type eventLog struct {
	mu     sync.Mutex
	evs    []hypervisor.StateEvent
	closed chan struct{} // closed when the channel is
}

func collect(ch <-chan hypervisor.StateEvent) *eventLog {
	l := &eventLog{closed: make(chan struct{})}
	go func() {
		defer close(l.closed)
		for ev := range ch {
			l.mu.Lock()
			l.evs = append(l.evs, ev)
			l.mu.Unlock()
		}
	}()
	return l
}

// wait waits for an event (not a replay) of want's state and cause, and
// of its reason and pid when want has them, and returns it.
func (l *eventLog) wait(t *testing.T, want hypervisor.StateEvent, timeout time.Duration) hypervisor.StateEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, ev := range l.evs {
			if ev.State == want.State && ev.Cause == want.Cause && ev.Replay == want.Replay &&
				(want.Reason == "" || ev.Reason == want.Reason) && (want.PID == 0 || ev.PID == want.PID) {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Fatalf("no event %+v within %v; got %+v", want, timeout, l.evs)
	return hypervisor.StateEvent{}
}

func TestLifecycleRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stateDir := t.TempDir()
	d := newTestDriver(t, stateDir)
	defer d.Close()

	uid := "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
	cfg := guestConfig(g, "life", uid)
	cfg.Disks = append(cfg.Disks, hypervisor.DiskConfig{Name: "data", SizeMiB: 16})
	cfg.CloudInit = &hypervisor.CloudInitConfig{MetaData: "instance-id: iid-lifecycle-42\nlocal-hostname: life\n"}
	cfg.StartPaused = true
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d, h)
	if fi, err := os.Stat(h.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("vm dir: %v, %v", fi, err)
	}
	for _, f := range []string{handleFile, seedISO, "root.qcow2", "data.qcow2"} {
		if _, err := os.Stat(filepath.Join(h.Dir, f)); err != nil {
			t.Errorf("Create did not make %s: %v", f, err)
		}
	}
	evctx, evcancel := context.WithCancel(ctx)
	defer evcancel()
	evch, err := d.Events(evctx, h)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(evch)

	t0 := time.Now()
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start returned after %v", time.Since(t0))
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StatePaused || st.PID != h.PID {
		t.Fatalf("State after paused start = %+v, %v", st, err)
	}
	// Attach to the serial console before the guest runs, so the stream
	// carries the marker too.
	con, err := d.OpenConsole(ctx, h, "serial")
	if err != nil {
		t.Fatalf("OpenConsole: %v", err)
	}
	defer con.Close()
	seen := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(con)
		for sc.Scan() {
			if strings.Contains(sc.Text(), guest.ReadyMarker) {
				close(seen)
				io.Copy(io.Discard, con)
				return
			}
		}
	}()
	t0 = time.Now()
	if err := d.Resume(ctx, h); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	select {
	case <-seen:
		t.Logf("marker on the serial console %v after resume", time.Since(t0))
	case <-time.After(30 * time.Second):
		t.Fatal("no marker on the serial console stream")
	}
	waitLog(t, d, h, regexp.MustCompile(guest.ReadyMarker), 5*time.Second)
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-guest: disk vda (\d+)`), 5*time.Second)
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-guest: disk vdb 32768`), 5*time.Second)
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-guest: seed instance-id=iid-lifecycle-42\r?\n`), 5*time.Second)
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-tick 3\b`), 5*time.Second)
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateRunning, Reason: "resumed"}, 5*time.Second)

	// Pause: the heartbeat stops.
	if err := d.Pause(ctx, h); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StatePaused {
		t.Fatalf("State after Pause = %+v, %v", st, err)
	}
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StatePaused, Reason: "paused"}, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // let a line already in flight land
	before := lastTick(t, d, h)
	time.Sleep(1200 * time.Millisecond)
	if after := lastTick(t, d, h); after != before {
		t.Fatalf("paused guest kept ticking: %d -> %d", before, after)
	}
	// Resume: it continues.
	if err := d.Resume(ctx, h); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-tick `+strconv.Itoa(before+2)+`\b`), 5*time.Second)
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StateRunning {
		t.Fatalf("State after Resume = %+v, %v", st, err)
	}

	// Graceful stop through the ACPI power button.
	pid := h.PID
	t0 = time.Now()
	if err := d.Stop(ctx, h, hypervisor.StopOptions{Timeout: 20 * time.Second}); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("graceful Stop took %v", time.Since(t0))
	waitLog(t, d, h, regexp.MustCompile(regexp.QuoteMeta(guest.AcpiPoweroffLine)), time.Second)
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseRequested}, 5*time.Second)
	if processAlive(pid, 0) {
		t.Fatalf("qemu pid %d still alive after Stop", pid)
	}
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StateStopped || h.PID != 0 {
		t.Fatalf("State after Stop = %+v, %v (pid %d)", st, err, h.PID)
	}
	if saved, err := LoadHandle(h.Dir); err != nil || saved.PID != 0 {
		t.Fatalf("persisted handle after Stop = %+v, %v", saved, err)
	}

	// Start again (running this time): the console log keeps both boots.
	cfg.StartPaused = false
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	waitLog(t, d, h, regexp.MustCompile(`(?s)`+guest.ReadyMarker+`.*`+guest.ReadyMarker), 30*time.Second)
	if st, err := d.State(ctx, h); err != nil || st.State != hypervisor.StateRunning {
		t.Fatalf("State after second Start = %+v, %v", st, err)
	}
	if err := d.Start(ctx, h, cfg); err == nil {
		t.Fatal("Start of a running VM succeeded")
	}
	if n := qemuProcesses(t, uid); n != 1 {
		t.Fatalf("%d qemu processes for the vm, want 1", n)
	}

	pid = h.PID
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := os.Stat(h.Dir); !os.IsNotExist(err) {
		t.Fatalf("vm dir still there after Destroy: %v", err)
	}
	if processAlive(pid, 0) || qemuProcesses(t, uid) != 0 {
		t.Fatal("qemu still running after Destroy")
	}
	// The VM is gone, and with it its event subscriptions.
	select {
	case <-events.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("events still open after Destroy")
	}
}

func TestRecoverAfterAgentRestart(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A state dir long enough that socket paths need the short link.
	stateDir := filepath.Join(t.TempDir(), strings.Repeat("a-rather-long-directory-name/", 3))
	uid := "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
	if len(filepath.Join(stateDir, uid, serialSock)) <= 107 {
		t.Fatalf("test state dir is not long enough: %s", stateDir)
	}
	d1 := newTestDriver(t, stateDir)
	cfg := guestConfig(g, "phoenix", uid)
	h, err := d1.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, d1, h)
	if !strings.HasPrefix(h.Extra[extraSerial], d1.cfg.RunDir) {
		t.Fatalf("serial socket %q does not use the short run dir", h.Extra[extraSerial])
	}
	if err := d1.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitLog(t, d1, h, regexp.MustCompile(guest.ReadyMarker), 30*time.Second)
	pid := h.PID

	// The agent goes away; QEMU keeps running.
	d1.Close()
	if !processAlive(pid, h.PIDStart) {
		t.Fatal("qemu died with its driver")
	}

	d2 := newTestDriver(t, stateDir)
	defer d2.Close()
	h2, err := LoadHandle(filepath.Join(stateDir, uid))
	if err != nil {
		t.Fatal(err)
	}
	st, err := d2.Recover(ctx, h2)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if st.State != hypervisor.StateRunning || st.PID != pid || h2.PID != pid {
		t.Fatalf("Recover = %+v (handle pid %d), want running pid %d", st, h2.PID, pid)
	}
	if n := qemuProcesses(t, uid); n != 1 {
		t.Fatalf("%d qemu processes after Recover, want 1", n)
	}
	// The recovered driver drives the VM: pause, resume, console.
	if err := d2.Pause(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if err := d2.Resume(ctx, h2); err != nil {
		t.Fatal(err)
	}
	con, err := d2.OpenConsole(ctx, h2, "serial")
	if err != nil {
		t.Fatalf("OpenConsole after Recover: %v", err)
	}
	con.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(con).ReadString('\n')
	con.Close()
	if err != nil {
		t.Fatalf("reading serial console: %v", err)
	}
	t.Logf("serial console line after Recover: %q", line)
	vnc, err := d2.OpenConsole(ctx, h2, "vnc")
	if err != nil {
		t.Fatalf("OpenConsole vnc: %v", err)
	}
	hello := make([]byte, 12)
	vnc.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(vnc, hello); err != nil || !strings.HasPrefix(string(hello), "RFB 003.") {
		t.Errorf("vnc greeting %q, %v", hello, err)
	}
	vnc.Close()

	// A handle whose start time does not match is another process: stopped.
	stale := *h2
	stale.PIDStart++
	stale.Dir = t.TempDir()
	if st, err := d2.Recover(ctx, &stale); err != nil || st.State != hypervisor.StateStopped {
		t.Fatalf("Recover of a reused pid = %+v, %v", st, err)
	}
	if n := qemuProcesses(t, uid); n != 1 {
		t.Fatalf("%d qemu processes, want 1", n)
	}

	evctx, evcancel := context.WithCancel(ctx)
	defer evcancel()
	evch, err := d2.Events(evctx, h2)
	if err != nil {
		t.Fatal(err)
	}
	events := collect(evch)
	if err := d2.Stop(ctx, h2, hypervisor.StopOptions{Force: true}); err != nil {
		t.Fatalf("forced Stop: %v", err)
	}
	events.wait(t, hypervisor.StateEvent{State: hypervisor.StateStopped, Cause: hypervisor.CauseRequested}, 5*time.Second)
	if qemuProcesses(t, uid) != 0 {
		t.Fatal("qemu still running after forced Stop")
	}
	if b, _ := d2.ConsoleLog(ctx, h2, 0); bytes.Contains(b, []byte(guest.AcpiPoweroffLine)) {
		t.Error("forced Stop went through ACPI")
	}

	if err := d2.Destroy(ctx, h2, true); err != nil {
		t.Fatalf("Destroy keeping disks: %v", err)
	}
	kept := filepath.Join(stateDir, keptDirName, "phoenix-"+uid, "root.qcow2")
	if _, err := os.Stat(kept); err != nil || h2.Disks[0].Path != kept {
		t.Fatalf("kept disk: %v (path %s)", err, h2.Disks[0].Path)
	}
	if _, err := os.Stat(h2.Dir); !os.IsNotExist(err) {
		t.Fatal("vm dir still there after Destroy")
	}
	if _, err := os.Lstat(h.Extra[extraSockLink]); !os.IsNotExist(err) {
		t.Error("short socket link still there after Destroy")
	}
}

func TestCreateRollsBackAndStartReportsQEMULog(t *testing.T) {
	guest.RequireQEMU(t)
	ctx := context.Background()
	stateDir := t.TempDir()
	d := newTestDriver(t, stateDir)
	defer d.Close()

	bad := hypervisor.VMConfig{Name: "bad", UID: "rollback-1", Disks: []hypervisor.DiskConfig{
		{Name: "ok", SizeMiB: 8},
		{Name: "broken", BackingFile: filepath.Join(stateDir, "missing.qcow2")},
	}}
	if _, err := d.Create(ctx, bad); err == nil {
		t.Fatal("Create with a missing backing file succeeded")
	}
	if _, err := os.Stat(filepath.Join(stateDir, "rollback-1")); !os.IsNotExist(err) {
		t.Fatalf("Create left its dir behind: %v", err)
	}

	// A kernel that is not a kernel: QEMU exits during startup.
	notKernel := filepath.Join(stateDir, "not-a-kernel")
	os.WriteFile(notKernel, []byte("nope"), 0o644)
	cfg := hypervisor.VMConfig{Name: "nokernel", UID: "start-fail-1", Kernel: notKernel}
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Start(ctx, h, cfg)
	if err == nil {
		cleanupVM(t, d, h)
		t.Fatal("Start with a bogus kernel succeeded")
	}
	if !strings.Contains(err.Error(), "qemu.log") || !strings.Contains(err.Error(), "kernel") {
		t.Errorf("Start error lacks qemu's log: %v", err)
	}
	if h.PID != 0 || qemuProcesses(t, "start-fail-1") != 0 {
		t.Error("failed Start left a process")
	}
	if err := d.Destroy(ctx, h, false); err != nil {
		t.Fatal(err)
	}
}

func TestInfoAndCapabilities(t *testing.T) {
	guest.RequireQEMU(t)
	d := newTestDriver(t, t.TempDir())
	info, err := d.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Version, "QEMU emulator version") || (info.Accel != "kvm" && info.Accel != "tcg") {
		t.Errorf("Info = %+v", info)
	}
	c := d.Capabilities()
	if !c.Pause || !c.SerialConsole || !c.VNCConsole || !c.KernelBoot || !c.CloudInit || !c.LiveMigration || c.Snapshots {
		t.Errorf("Capabilities = %+v", c)
	}
}
