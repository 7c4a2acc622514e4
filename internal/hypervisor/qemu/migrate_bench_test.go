package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"

	"github.com/polyvisor/polyvisor/internal/qmp"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// BenchmarkMigrate measures, for the same test guest (256 MiB, one vCPU,
// one qcow2 overlay disk, under this machine's accelerator), the wall time
// from starting the destination's QEMU to the guest running there, and the
// guest-visible downtime (the longest gap between two of its console ticks,
// printed every 0.2 s, less 0.2 s), three ways in the same run:
//
//   - shared: the driver's migration (PrepareIncoming, memory,
//     FinishIncoming) of a VM whose disk is on shared storage (one file
//     both drivers open), so only the memory moves: the same work as bare;
//   - storage: the driver's migration with the disk a local overlay,
//     mirrored over NBD before the memory moves;
//   - bare: two bare QEMUs (no sandbox, no chroot, the disk shared), the
//     destination started with -incoming tcp:, QMP migrate, query-migrate
//     polled to completed, the same max-bandwidth.
//
// Both driver runs are confined QEMUs with descriptors over socket pairs.
// The driver's steps are timed (median milliseconds per step, logged).
// Each run logs the load, the source's query-migrate once completed, the
// CPU time both QEMUs ran and waited for a CPU, and their cgroups' quota
// throttling (migrate_benchstats_test.go); the CPU time is reported too,
// since on a shared machine the wall times follow the scheduler.
//
// Switches, to measure one cause at a time (environment, =1):
// POLYVISOR_BENCH_MIG_NO_STORAGE skips the storage case;
// POLYVISOR_BENCH_MIG_NO_QUOTA lifts the driver's QEMUs' CPU quota;
// POLYVISOR_BENCH_MIG_BARE_CGROUP runs the bare QEMUs in cgroups beside the
// driver's VMs, with a VM's limits.
//
// Run with: go test -run XXX -bench 'Migrate$' -benchtime 3x -v ./internal/hypervisor/qemu/
func BenchmarkMigrate(b *testing.B) {
	guest.RequireQEMU(b)
	g := guest.Build(b)
	ctx := context.Background()
	steps := recordSteps(b)
	var sWall, dWall, bWall, sDown, dDown, bDown []float64
	var sCPU, bCPU []float64 // CPU time both QEMUs ran over the wall time
	storage := !benchEnv("POLYVISOR_BENCH_MIG_NO_STORAGE")
	for i := 0; i < b.N; i++ {
		steps.side = "shared"
		w, d, st := benchDriverMigration(b, ctx, g, 2*i, true)
		sWall, sDown = append(sWall, w), append(sDown, d)
		sCPU = append(sCPU, (st.src.run + st.dst.run).Seconds())
		b.Logf("run %d shared:  wall %.2f s downtime %.0f ms | %v", i, w, d*1000, st)
		if storage {
			steps.side = "storage"
			w, d, st = benchDriverMigration(b, ctx, g, 2*i+1, false)
			dWall, dDown = append(dWall, w), append(dDown, d)
			b.Logf("run %d storage: wall %.2f s downtime %.0f ms | %v", i, w, d*1000, st)
		}
		w, d, st = benchBareMigration(b, ctx, g)
		bWall, bDown = append(bWall, w), append(bDown, d)
		bCPU = append(bCPU, (st.src.run + st.dst.run).Seconds())
		b.Logf("run %d bare:    wall %.2f s downtime %.0f ms | %v", i, w, d*1000, st)
	}
	if !storage {
		dWall, dDown = []float64{0}, []float64{0}
	}
	b.ReportMetric(median(sWall), "shared-wall-s")
	b.ReportMetric(median(dWall), "storage-wall-s")
	b.ReportMetric(median(bWall), "bare-wall-s")
	b.ReportMetric(median(sWall)/median(bWall), "wall-ratio")
	b.ReportMetric(median(dWall)/median(bWall), "storage-ratio")
	// What the QEMUs did rather than how long they waited for a CPU: on
	// a shared machine the wall times follow the scheduler.
	b.ReportMetric(median(sCPU), "shared-cpu-s")
	b.ReportMetric(median(bCPU), "bare-cpu-s")
	b.ReportMetric(median(sCPU)/median(bCPU), "cpu-ratio")
	b.ReportMetric(median(sDown)*1000, "shared-downtime-ms")
	b.ReportMetric(median(dDown)*1000, "storage-downtime-ms")
	b.ReportMetric(median(bDown)*1000, "bare-downtime-ms")
	b.Logf("shared wall %v downtime %v; storage wall %v downtime %v; bare wall %v downtime %v", sWall, sDown, dWall, dDown, bWall, bDown)
	steps.report(b)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// stepTimes gathers the driver's migration step timings per case.
type stepTimes struct {
	mu    sync.Mutex
	side  string
	order []string
	ms    map[string][]float64
}

func recordSteps(b *testing.B) *stepTimes {
	st := &stepTimes{ms: map[string][]float64{}}
	migrationSteps = func(uid, side, step string, took time.Duration) {
		st.mu.Lock()
		defer st.mu.Unlock()
		k := st.side + " " + side + " " + step
		if _, ok := st.ms[k]; !ok {
			st.order = append(st.order, k)
		}
		st.ms[k] = append(st.ms[k], float64(took.Microseconds())/1000)
	}
	b.Cleanup(func() { migrationSteps = nil })
	return st
}

func (st *stepTimes) report(b *testing.B) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, k := range st.order {
		b.Logf("step %-40s median %8.1f ms %v", k, median(st.ms[k]), st.ms[k])
	}
}

// tickWatch records when each console tick is first seen in any of the
// log files.
type tickWatch struct {
	files []string
	seen  map[int]time.Time
	stop  chan struct{}
	done  chan struct{}
}

func watchTicks(files ...string) *tickWatch {
	w := &tickWatch{files: files, seen: map[int]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for _, f := range w.files {
				b, _ := os.ReadFile(f)
				now := time.Now()
				for _, m := range tickRE.FindAllSubmatch(b, -1) {
					n, _ := strconv.Atoi(string(m[1]))
					if _, ok := w.seen[n]; !ok {
						w.seen[n] = now
					}
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return w
}

// downtime stops the watch and returns the longest gap between
// consecutive ticks less their period.
func (w *tickWatch) downtime(b *testing.B) float64 {
	close(w.stop)
	<-w.done
	var ns []int
	for n := range w.seen {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	gap := 0.0
	for i := 1; i < len(ns); i++ {
		if ns[i] != ns[i-1]+1 {
			b.Fatalf("ticks skip from %d to %d", ns[i-1], ns[i])
		}
		gap = max(gap, w.seen[ns[i]].Sub(w.seen[ns[i-1]]).Seconds())
	}
	return max(gap-0.2, 0)
}

// benchDriverMigration runs the driver's migration. With
// POLYVISOR_BENCH_MIG_NO_QUOTA=1 the QEMUs' cgroups lose their CPU quota
// once started, to measure what the quota costs.
func benchDriverMigration(b *testing.B, ctx context.Context, g guest.Paths, i int, shared bool) (wall, down float64, st runStats) {
	src := newBenchDriver(b, filepath.Join(b.TempDir(), "src"))
	dst := newBenchDriver(b, filepath.Join(b.TempDir(), "dst"))
	defer src.Close()
	defer dst.Close()
	uid := fmt.Sprintf("5e1f0c2a-7b3d-4c8e-9a6f-%012d", i)
	cfg := guestConfig(g, "bench", uid)
	cfg.NICs = nil
	if shared {
		cfg.Disks = []hypervisor.DiskConfig{{Name: "root", SharedPath: sharedOverlay(b, g)}}
	}
	h, err := src.Create(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Destroy(ctx, h, false)
	if err := src.Start(ctx, h, cfg); err != nil {
		b.Fatal(err)
	}
	waitTicksIn(b, filepath.Join(h.Dir, consoleLog), 3)
	noQuota := benchEnv("POLYVISOR_BENCH_MIG_NO_QUOTA")
	srcStat := cpuStatFile(h.Extra[extraCgroup])
	if noQuota && srcStat != "" {
		if err := liftQuota(srcStat); err != nil {
			b.Fatal(err)
		}
	}
	st.load = loadAvg()
	st.others = otherVMTasks(vmsCPUParent(src), uid)
	srcThr := readThrottle(srcStat)
	sched := watchSched(h.PID)
	t0 := time.Now()
	dh, err := dst.PrepareIncoming(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Destroy(ctx, dh, false)
	dstStat := cpuStatFile(dh.Extra[extraCgroup])
	if noQuota && dstStat != "" {
		if err := liftQuota(dstStat); err != nil {
			b.Fatal(err)
		}
	}
	dstThr := readThrottle(dstStat)
	dsched := watchSched(dh.PID)
	w := watchTicks(filepath.Join(h.Dir, consoleLog), filepath.Join(dh.Dir, consoleLog))
	finished := make(chan error, 1)
	go func() { finished <- dst.FinishIncoming(ctx, dh) }()
	if err := src.MigrateOut(ctx, h, pairDialer(b, dst, dh), nil); err != nil {
		b.Fatal(err)
	}
	if err := <-finished; err != nil {
		b.Fatal(err)
	}
	wall = time.Since(t0).Seconds()
	st.src, st.dst = sched.use()[0], dsched.use()[0]
	st.throttled = [2]cgThrottle{readThrottle(srcStat).since(srcThr), readThrottle(dstStat).since(dstThr)}
	if v, err := src.attached(ctx, h); err == nil && v != nil {
		st.mig, _ = sourceStats(ctx, v.qmp)
	}
	waitTicksIn(b, filepath.Join(dh.Dir, consoleLog), 3)
	return wall, w.downtime(b), st
}

// sharedOverlay makes a qcow2 overlay of the guest's disk outside both
// drivers' directories, as a shared pool's volume is.
func sharedOverlay(b *testing.B, g guest.Paths) string {
	disk := filepath.Join(b.TempDir(), "shared.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", g.Disk, "-F", "qcow2", disk).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	return disk
}

// newBenchDriver is a driver that logs only warnings: a benchmark's
// output stays readable.
func newBenchDriver(b *testing.B, stateDir string) *Driver {
	d, err := New(Config{
		StateDir: stateDir,
		Logger:   slog.New(slog.NewTextHandler(testWriter{b}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		RunDir:   filepath.Join(os.TempDir(), "polyvisor-test-run"),
	})
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func waitTicksIn(b *testing.B, file string, n int) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		c, _ := os.ReadFile(file)
		if len(tickRE.FindAll(c, -1)) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("no %d ticks in %s", n, file)
}

// bareQEMU starts a QEMU with the test guest and nothing of the driver;
// kill ends it (and its cgroup), as the driver runs end theirs, so that no
// run competes with the guests of the runs before it.
// With POLYVISOR_BENCH_MIG_BARE_CGROUP=1 it runs in a cgroup beside the
// driver's VMs, with the limits the driver gives a VM of its size.
func bareQEMU(b *testing.B, g guest.Paths, dir, name, disk string, extra ...string) (c *qmp.Client, log string, pid int, cgPaths string, kill func()) {
	sock := filepath.Join(dir, name+".qmp")
	log = filepath.Join(dir, name+".log")
	args := append([]string{"-accel", probeAccel(), "-machine", "q35", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
		"-chardev", "socket,id=qmp,path=" + sock + ",server=on,wait=off", "-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=s0,path=" + filepath.Join(dir, name+".ser") + ",server=on,wait=off,logfile=" + log, "-serial", "chardev:s0",
		"-blockdev", "driver=qcow2,node-name=disk0,file.driver=file,file.filename=" + disk,
		"-device", "virtio-blk-pci,drive=disk0,id=virtio-disk0",
		"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", guest.Cmdline}, extra...)
	cmd := exec.Command("qemu-system-x86_64", args...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var once sync.Once
	kill = func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-exited
			removeCgroups(cgPaths)
		})
	}
	b.Cleanup(kill)
	if benchEnv("POLYVISOR_BENCH_MIG_BARE_CGROUP") {
		d := newBenchDriver(b, filepath.Join(b.TempDir(), "cg"))
		cg := d.confinement().cgroups.forVM(fmt.Sprintf("bench-bare-%s-%d", name, cmd.Process.Pid))
		if cg == nil {
			b.Fatal("no cgroups here for the bare QEMUs")
		}
		cgPaths = cg.paths()
		if err := cg.create(limitsFor(hypervisor.VMConfig{VCPUs: 1, MemoryMiB: 256}, probeAccel())); err != nil {
			b.Fatal(err)
		}
		if err := cg.add(cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		var err error
		c, err = qmp.Dial(ctx, sock)
		if err == nil {
			return c, log, cmd.Process.Pid, cgPaths, kill
		}
		if ctx.Err() != nil {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var benchAccel string

// probeAccel is the accelerator a driver decided for this machine.
func probeAccel() string {
	if benchAccel == "" {
		d, err := New(Config{StateDir: os.TempDir(), RunDir: filepath.Join(os.TempDir(), "polyvisor-test-run")})
		if err != nil {
			return "tcg"
		}
		benchAccel = d.Accel()
	}
	return benchAccel
}

func benchBareMigration(b *testing.B, ctx context.Context, g guest.Paths) (wall, down float64, st runStats) {
	dir := b.TempDir()
	disk := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", g.Disk, "-F", "qcow2", disk).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	src, srcLog, srcPID, srcCg, killSrc := bareQEMU(b, g, dir, "src", disk)
	defer killSrc()
	defer src.Close()
	waitTicksIn(b, srcLog, 3)
	srcStat := cpuStatFile(srcCg)
	st.load = loadAvg()
	st.others = otherVMTasks(vmsCPUParent(newBenchDriver(b, filepath.Join(dir, "cgparent"))), filepath.Base(filepath.Dir(srcStat)))
	srcThr := readThrottle(srcStat)
	sched := watchSched(srcPID)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t0 := time.Now()
	dst, dstLog, dstPID, dstCg, killDst := bareQEMU(b, g, dir, "dst", disk, "-incoming", "tcp:"+addr)
	defer killDst()
	defer dst.Close()
	dstStat := cpuStatFile(dstCg)
	dstThr := readThrottle(dstStat)
	dsched := watchSched(dstPID)
	w := watchTicks(srcLog, dstLog)
	if err := src.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": maxMigrationBandwidth}, nil); err != nil {
		b.Fatal(err)
	}
	if err := src.Execute(ctx, "migrate", map[string]string{"uri": "tcp:" + addr}, nil); err != nil {
		b.Fatal(err)
	}
	for {
		mi, err := queryMigrate(ctx, src)
		if err != nil {
			b.Fatal(err)
		}
		if mi.Status == "completed" {
			break
		}
		if mi.Status == "failed" || mi.Status == "cancelled" {
			b.Fatalf("bare migration %s: %s", mi.Status, mi.ErrorDesc)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := dst.Execute(ctx, "query-status", nil, &st); err != nil {
			b.Fatal(err)
		}
		if st.Status == "running" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	wall = time.Since(t0).Seconds()
	st.src, st.dst = sched.use()[0], dsched.use()[0]
	st.throttled = [2]cgThrottle{readThrottle(srcStat).since(srcThr), readThrottle(dstStat).since(dstThr)}
	st.mig, _ = sourceStats(ctx, src)
	waitTicksIn(b, dstLog, 3)
	return wall, w.downtime(b), st
}

// storageData is what BenchmarkStorageMigrate writes into the disk it
// moves.
const storageData = 256 << 20

// BenchmarkStorageMigrate measures the rate at which the driver's storage
// migration copies a disk holding real data (256 MiB written into a
// 512 MiB data disk, a pattern qemu-io writes, so nothing of it is zero),
// from the mirror's start to its readiness, and the rate of qemu-img
// convert of the same disk file into the same kind of target over the
// same path: a fresh incoming VM's NBD export, reached through the same
// socket pair channel (the agents' TCP connection in production).
//
// Run with: go test -run XXX -bench StorageMigrate -benchtime 3x ./internal/hypervisor/qemu/
func BenchmarkStorageMigrate(b *testing.B) {
	guest.RequireQEMU(b)
	g := guest.Build(b)
	ctx := context.Background()
	steps := recordSteps(b)
	steps.side = "storage"
	var mirror, convert []float64
	for i := 0; i < b.N; i++ {
		src := newBenchDriver(b, filepath.Join(b.TempDir(), "src"))
		dst := newBenchDriver(b, filepath.Join(b.TempDir(), "dst"))
		uid := fmt.Sprintf("5e1f0c2a-7b3d-4c8e-9a6f-%012d", 100+i)
		cfg := guestConfig(g, "bench", uid)
		cfg.NICs = nil
		cfg.Disks = append(cfg.Disks, hypervisor.DiskConfig{Name: "data", SizeMiB: 512})
		h, err := src.Create(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		data := h.Disks[1].Path
		if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x5a 0 %d", storageData), data).CombinedOutput(); err != nil {
			b.Fatalf("writing the data disk: %v: %s", err, out)
		}
		if err := src.Start(ctx, h, cfg); err != nil {
			b.Fatal(err)
		}
		waitTicksIn(b, filepath.Join(h.Dir, consoleLog), 2)
		dh, err := dst.PrepareIncoming(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		finished := make(chan error, 1)
		go func() { finished <- dst.FinishIncoming(ctx, dh) }()
		steps.mu.Lock()
		steps.ms = map[string][]float64{}
		steps.mu.Unlock()
		if err := src.MigrateOut(ctx, h, pairDialer(b, dst, dh), nil); err != nil {
			b.Fatal(err)
		}
		if err := <-finished; err != nil {
			b.Fatal(err)
		}
		steps.mu.Lock()
		took := (steps.ms["storage source mirror-start"][0] + steps.ms["storage source mirror-ready"][0]) / 1000
		steps.mu.Unlock()
		mirror = append(mirror, took)
		dst.Destroy(ctx, dh, false)

		// The same file, converted into a fresh incoming VM's export.
		ch, err := dst.PrepareIncoming(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		sock := filepath.Join(b.TempDir(), "nbd.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			b.Fatal(err)
		}
		dial := pairDialer(b, dst, ch)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				far, err := dial(ctx, hypervisor.ChannelDisk("data"))
				if err != nil {
					c.Close()
					continue
				}
				go splice(c, far)
			}
		}()
		t0 := time.Now()
		out, err := exec.Command("qemu-img", "convert", "-U", "-n", "--target-is-zero", "-f", "qcow2", "-O", "raw", data,
			"nbd+unix:///data?socket="+sock).CombinedOutput()
		if err != nil {
			b.Fatalf("qemu-img convert: %v: %s", err, out)
		}
		convert = append(convert, time.Since(t0).Seconds())
		ln.Close()
		dst.AbortIncoming(ctx, ch)
		src.Destroy(ctx, h, false)
		src.Close()
		dst.Close()
	}
	mib := float64(storageData >> 20)
	b.ReportMetric(mib/median(mirror), "mirror-MiB/s")
	b.ReportMetric(mib/median(convert), "convert-MiB/s")
	b.ReportMetric(median(mirror)/median(convert), "time-ratio")
	b.Logf("mirror %v s; qemu-img convert %v s (%d MiB)", mirror, convert, storageData>>20)
}
