package qemu

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// Tests in this file migrate a real QEMU (under TCG here) running the test
// guest between two drivers with state dirs of their own, as two hosts
// would; socket pairs stand for the agents' connections.

// connPair is the two ends of a connected unix socket pair, named name.
func connPair(name string) ([2]net.Conn, error) {
	var conns [2]net.Conn
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return conns, err
	}
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), name)
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				syscall.Close(fds[1])
			}
			return conns, err
		}
		conns[i] = c
	}
	return conns, nil
}

// pairDialer connects each channel the source asks for to the destination
// driver's Incoming through a socket pair.
func pairDialer(t testing.TB, dst *Driver, h *hypervisor.Handle) hypervisor.MigrationDialer {
	return func(ctx context.Context, channel string) (net.Conn, error) {
		conns, err := connPair("migration-" + channel)
		if err != nil {
			return nil, err
		}
		if err := dst.Incoming(ctx, h, channel, conns[1]); err != nil {
			conns[0].Close()
			return nil, err
		}
		return conns[0], nil
	}
}

// markerScript writes marker into the root disk (vda) at 1 MiB and says so.
func markerScript(marker string) string {
	return "printf '" + marker + "' | dd of=/dev/vda bs=512 seek=2048 conv=notrunc 2>/dev/null && sync && echo polyvisor-marker-written\n"
}

var markerWrittenRE = regexp.MustCompile(`polyvisor-marker-written`)

// startMigratable boots the test guest under src and waits until it has
// written the marker and ticks.
func startMigratable(t *testing.T, ctx context.Context, src *Driver, uid, marker string) (*hypervisor.Handle, hypervisor.VMConfig) {
	t.Helper()
	g := guest.Build(t)
	guest.RequireRun(t, g)
	cfg := guestConfig(g, "mig", uid)
	cfg.Cmdline = guest.RunCmdline(markerScript(marker))
	cfg.CloudInit = &hypervisor.CloudInitConfig{MetaData: "instance-id: iid-mig\nlocal-hostname: mig\n"}
	h, err := src.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cleanupVM(t, src, h)
	if err := src.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitLog(t, src, h, markerWrittenRE, 90*time.Second)
	waitLog(t, src, h, regexp.MustCompile(`polyvisor-tick \d+\s[\s\S]*polyvisor-tick \d+\s`), 30*time.Second)
	return h, cfg
}

func ticks(b []byte) []int {
	var n []int
	for _, m := range tickRE.FindAllSubmatch(b, -1) {
		v, _ := strconv.Atoi(string(m[1]))
		n = append(n, v)
	}
	return n
}

func TestMigrateRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	src := newTestDriver(t, filepath.Join(t.TempDir(), "src"))
	defer src.Close()
	dst := newTestDriver(t, filepath.Join(t.TempDir(), "dst"))
	defer dst.Close()

	uid := "0b7c51a2-6e0f-4a53-9d11-5c2e7f3a8b90"
	const marker = "PVMARK-4f1d9c"
	h, cfg := startMigratable(t, ctx, src, uid, marker)
	srcPID := h.PID

	dh, err := dst.PrepareIncoming(ctx, cfg)
	if err != nil {
		t.Fatalf("PrepareIncoming: %v", err)
	}
	cleanupVM(t, dst, dh)
	if dh.Dir == h.Dir {
		t.Fatal("source and destination share a directory")
	}
	finished := make(chan error, 1)
	go func() { finished <- dst.FinishIncoming(ctx, dh) }()

	var phases []string
	var sent int64
	t0 := time.Now()
	err = src.MigrateOut(ctx, h, pairDialer(t, dst, dh), func(p hypervisor.MigrationProgress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		sent = max(sent, p.MemorySent)
	})
	if err != nil {
		t.Fatalf("MigrateOut: %v", err)
	}
	if err := <-finished; err != nil {
		t.Fatalf("FinishIncoming: %v", err)
	}
	t.Logf("migrated in %v, phases %v, %d bytes of memory sent", time.Since(t0), phases, sent)
	if phases[0] != hypervisor.PhaseStorage || phases[len(phases)-1] != hypervisor.PhaseCompleted || sent == 0 {
		t.Errorf("progress: phases %v, memory sent %d; want storage first, completed last, memory sent", phases, sent)
	}
	if st, err := dst.State(ctx, dh); err != nil || st.State != hypervisor.StateRunning {
		t.Fatalf("destination State = %+v, %v", st, err)
	}
	// The source is paused for good; the agent destroys it.
	if st, err := src.State(ctx, h); err != nil || st.State != hypervisor.StatePaused {
		t.Errorf("source State after migration = %+v, %v; want paused", st, err)
	}
	srcLog, _ := src.ConsoleLog(ctx, h, 0)
	if err := src.Destroy(ctx, h, false); err != nil {
		t.Fatalf("destroying the source: %v", err)
	}
	if processAlive(srcPID, 0) {
		t.Errorf("source qemu %d still runs", srcPID)
	}
	if _, err := os.Stat(h.Dir); !os.IsNotExist(err) {
		t.Errorf("source dir left: %v", err)
	}

	// The guest goes on counting where it was, without booting again.
	srcTicks := ticks(srcLog)
	last := srcTicks[len(srcTicks)-1]
	waitLog(t, dst, dh, regexp.MustCompile(`polyvisor-tick (\d+)\s[\s\S]*polyvisor-tick (\d+)\s[\s\S]*polyvisor-tick (\d+)\s`), 30*time.Second)
	dstLog, _ := dst.ConsoleLog(ctx, dh, 0)
	dstTicks := ticks(dstLog)
	t.Logf("source's last tick %d, destination's first %v", last, dstTicks[:3])
	if bytes.Contains(dstLog, []byte(guest.ReadyMarker)) {
		t.Errorf("the guest booted again on the destination:\n%s", dstLog)
	}
	if first := dstTicks[0]; first <= last || first > last+25 {
		t.Errorf("destination's first tick %d does not follow the source's last %d", first, last)
	}
	for i := 1; i < len(dstTicks); i++ {
		if dstTicks[i] != dstTicks[i-1]+1 {
			t.Errorf("destination's ticks jump: %v", dstTicks)
			break
		}
	}

	// The disk came along: the marker the guest wrote is in the
	// destination's overlay, made blank there and filled by the mirror.
	if err := dst.Stop(ctx, dh, hypervisor.StopOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(t.TempDir(), "root.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", dh.Disks[0].Path, raw).CombinedOutput(); err != nil {
		t.Fatalf("reading the destination's disk: %v: %s", err, out)
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(marker)) {
		t.Error("the marker the guest wrote before the migration is not on the destination's disk")
	}
	if _, err := os.Stat(filepath.Join(dh.Dir, nbdSock)); !os.IsNotExist(err) {
		t.Errorf("nbd socket left on the destination: %v", err)
	}
}

func TestMigrateCancelRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	src := newTestDriver(t, filepath.Join(t.TempDir(), "src"))
	defer src.Close()
	dst := newTestDriver(t, filepath.Join(t.TempDir(), "dst"))
	defer dst.Close()

	uid := "9a4e2c71-3b58-4d06-8f2a-6c1d0e9b7a35"
	h, cfg := startMigratable(t, ctx, src, uid, "PVMARK-cancel")
	srcPID := h.PID

	dh, err := dst.PrepareIncoming(ctx, cfg)
	if err != nil {
		t.Fatalf("PrepareIncoming: %v", err)
	}
	cleanupVM(t, dst, dh)
	dstPID := dh.PID
	finished := make(chan error, 1)
	go func() { finished <- dst.FinishIncoming(ctx, dh) }()

	// Cancel as soon as the memory starts to move.
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	err = src.MigrateOut(mctx, h, pairDialer(t, dst, dh), func(p hypervisor.MigrationProgress) {
		if p.Phase == hypervisor.PhaseMemory {
			mcancel()
		}
	})
	if err == nil || mctx.Err() == nil {
		t.Fatalf("MigrateOut after cancel = %v, want the cancellation", err)
	}
	t.Logf("MigrateOut: %v", err)
	if err := <-finished; err == nil {
		t.Error("FinishIncoming succeeded for a cancelled migration")
	}
	if err := dst.AbortIncoming(ctx, dh); err != nil {
		t.Fatalf("AbortIncoming: %v", err)
	}
	if processAlive(dstPID, 0) {
		t.Errorf("destination qemu %d still runs", dstPID)
	}
	if _, err := os.Stat(dh.Dir); !os.IsNotExist(err) {
		t.Errorf("destination dir left: %v", err)
	}

	// The source runs on, the same process, and keeps counting.
	if st, err := src.State(ctx, h); err != nil || st.State != hypervisor.StateRunning || st.PID != srcPID {
		t.Fatalf("source State after cancel = %+v, %v; want running as pid %d", st, err, srcPID)
	}
	before := lastTick(t, src, h)
	waitLog(t, src, h, regexp.MustCompile(`polyvisor-tick `+strconv.Itoa(before+3)+`\s`), 30*time.Second)
	log, _ := src.ConsoleLog(ctx, h, 0)
	if n := bytes.Count(log, []byte(guest.ReadyMarker)); n != 1 {
		t.Errorf("the guest booted %d times", n)
	}
	// A second migration after the cancelled one still works.
	dh2, err := dst.PrepareIncoming(ctx, cfg)
	if err != nil {
		t.Fatalf("PrepareIncoming again: %v", err)
	}
	cleanupVM(t, dst, dh2)
	go func() { finished <- dst.FinishIncoming(ctx, dh2) }()
	if err := src.MigrateOut(ctx, h, pairDialer(t, dst, dh2), nil); err != nil {
		t.Fatalf("MigrateOut after a cancelled one: %v", err)
	}
	if err := <-finished; err != nil {
		t.Fatalf("FinishIncoming after a cancelled one: %v", err)
	}
	src.Destroy(ctx, h, false)
}

func TestMigrateOutRefusesPausedRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := newTestDriver(t, filepath.Join(t.TempDir(), "src"))
	defer src.Close()
	g := guest.Build(t)
	cfg := guestConfig(g, "paused", "3c9e8d21-7f40-4b5a-a6e2-1d0c9b8a7f63")
	cfg.StartPaused = true
	h, err := src.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cleanupVM(t, src, h)
	if err := src.Start(ctx, h, cfg); err != nil {
		t.Fatal(err)
	}
	dialed := false
	err = src.MigrateOut(ctx, h, func(context.Context, string) (net.Conn, error) {
		dialed = true
		return nil, os.ErrInvalid
	}, nil)
	if err == nil || dialed || !bytes.Contains([]byte(err.Error()), []byte("paused")) && !bytes.Contains([]byte(err.Error()), []byte("prelaunch")) {
		t.Fatalf("MigrateOut of a paused vm = %v (dialed %v), want a refusal before any connection", err, dialed)
	}
	src.Destroy(ctx, h, false)
}
