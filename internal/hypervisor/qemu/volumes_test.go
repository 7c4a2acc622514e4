package qemu

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// volumeWatcher is a guest script that reports the disk whose serial is
// data1 whenever it appears, changes size or goes, writes a marker to it
// when it finds none there, and then times a read of 4 MiB of it it has
// not read before (whole seconds: busybox's date).
const volumeWatcher = `serial=data1
seen=
off=0
while :; do
	found=
	for b in /sys/block/vd*; do
		[ "$(cat $b/serial 2>/dev/null)" = "$serial" ] || continue
		d=${b##*/}
		found=$d
		key="$d:$(cat $b/size)"
		[ "$key" = "$seen" ] && continue
		seen=$key
		m=$(dd if=/dev/$d bs=16 count=1 2>/dev/null | tr -dc 'a-z0-9')
		if [ -z "$m" ]; then
			printf pvmark42 | dd of=/dev/$d conv=fsync 2>/dev/null
			m=wrote
		fi
		echo "pv-vol dev=$d sectors=$(cat $b/size) read=$m"
		off=$((off + 64))
		t0=$(date +%s)
		dd if=/dev/$d of=/dev/null bs=64k count=64 skip=$off 2>/dev/null
		echo "pv-vol timed-read secs=$(($(date +%s) - t0)) at=$off"
	done
	if [ -n "$seen" ] && [ -z "$found" ]; then
		echo "pv-vol gone"
		seen=
	fi
	sleep 0.2
done
`

// startVolumeGuest boots a guest running volumeWatcher.
func startVolumeGuest(ctx context.Context, t *testing.T, d *Driver, g guest.Paths, name, uid string) *hypervisor.Handle {
	t.Helper()
	cfg := guestConfig(g, name, uid)
	cfg.NICs = nil
	cfg.Cmdline = guest.RunCmdline(volumeWatcher)
	h, err := d.Create(ctx, cfg)
	if err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
	cleanupVM(t, d, h)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		b, _ := d.ConsoleLog(context.Background(), h, 0)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "pv-vol") || strings.Contains(l, "polyvisor-guest") {
				t.Logf("%s console: %s", name, strings.TrimSpace(l))
			}
		}
	})
	if err := d.Start(ctx, h, cfg); err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	waitLog(t, d, h, regexp.MustCompile(`polyvisor-guest: run begin`), 60*time.Second)
	return h
}

// TestVolumeHotplugRealQEMU plugs a volume file into a running guest,
// which writes a marker to it; grows it and the guest sees the size;
// limits its I/O; unplugs it; plugs it into a second guest, which reads
// the marker back.
func TestVolumeHotplugRealQEMU(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	guest.RequireRun(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := newTestDriver(t, t.TempDir())
	defer d.Close()

	vol := filepath.Join(t.TempDir(), "data1.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", vol, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	vc := hypervisor.VolumeConfig{Name: "data1", Path: vol, IOPS: 500}
	id := hypervisor.VolumeID("data1")

	h1 := startVolumeGuest(ctx, t, d, g, "vol-a", "0b6a1f0e-1111-4c6d-8e9f-0a1b2c3d4e5f")
	t0 := time.Now()
	if err := d.AttachVolume(ctx, h1, vc); err != nil {
		t.Fatalf("AttachVolume: %v", err)
	}
	waitLog(t, d, h1, regexp.MustCompile(`pv-vol dev=vd\w sectors=131072 read=wrote`), 30*time.Second)
	t.Logf("attach to marker written: %v", time.Since(t0))

	vs, err := d.Volumes(ctx, h1)
	if err != nil || len(vs) != 1 || vs[0].ID != id || vs[0].SizeMiB != 64 || vs[0].IOPS != 500 {
		t.Fatalf("Volumes = %+v, %v; want one %s of 64 MiB limited to 500 iops", vs, err, id)
	}
	// A second attach of the same volume is refused and leaves the first.
	if err := d.AttachVolume(ctx, h1, vc); err == nil {
		t.Fatal("a second AttachVolume of the same volume succeeded")
	}
	if vs, _ := d.Volumes(ctx, h1); len(vs) != 1 {
		t.Fatalf("after a refused attach Volumes = %+v", vs)
	}

	// The limit holds in the guest: 4 MiB at 1 MiB/s take seconds.
	if err := d.SetVolumeLimits(ctx, h1, id, 0, 1<<20); err != nil {
		t.Fatalf("SetVolumeLimits: %v", err)
	}
	if err := d.ResizeVolume(ctx, h1, id, 96); err != nil {
		t.Fatalf("ResizeVolume: %v", err)
	}
	waitLog(t, d, h1, regexp.MustCompile(`pv-vol dev=vd\w sectors=196608 read=pvmark42`), 30*time.Second)
	m := waitLog(t, d, h1, regexp.MustCompile(`pv-vol timed-read secs=(\d+) at=128`), 60*time.Second)
	first := waitLog(t, d, h1, regexp.MustCompile(`pv-vol timed-read secs=(\d+) at=64`), time.Second)
	t.Logf("4 MiB read by the guest: %s s unlimited (500 iops), %s s at 1 MiB/s", first[1], m[1])
	if secs, _ := strconv.Atoi(m[1]); secs < 2 {
		t.Fatalf("the guest read 4 MiB in %s s through a 1 MiB/s limit", m[1])
	}
	if vs, _ := d.Volumes(ctx, h1); len(vs) != 1 || vs[0].IOPS != 0 || vs[0].BPS != 1<<20 || vs[0].SizeMiB != 96 {
		t.Fatalf("after grow and limits Volumes = %+v", vs)
	}

	if err := d.DetachVolume(ctx, h1, id); err != nil {
		t.Fatalf("DetachVolume: %v", err)
	}
	waitLog(t, d, h1, regexp.MustCompile(`pv-vol gone`), 30*time.Second)
	if vs, _ := d.Volumes(ctx, h1); len(vs) != 0 {
		t.Fatalf("after detach Volumes = %+v", vs)
	}
	// QEMU let the file go: another writer may open it.
	if out, err := exec.Command("qemu-img", "info", vol).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img info after detach: %v: %s", err, out)
	}

	h2 := startVolumeGuest(ctx, t, d, g, "vol-b", "0b6a1f0e-2222-4c6d-8e9f-0a1b2c3d4e5f")
	if err := d.AttachVolume(ctx, h2, vc); err != nil {
		t.Fatalf("AttachVolume to the second vm: %v", err)
	}
	waitLog(t, d, h2, regexp.MustCompile(`pv-vol dev=vd\w sectors=196608 read=pvmark42`), 30*time.Second)
	// While the second VM holds it, QEMU's lock keeps a second writer out.
	if err := d.AttachVolume(ctx, h1, vc); err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("attaching a volume another vm holds: %v, want a lock error", err)
	}
	if vs, _ := d.Volumes(ctx, h1); len(vs) != 0 {
		t.Fatalf("a refused attach left %+v", vs)
	}
	for _, h := range []*hypervisor.Handle{h1, h2} {
		if err := d.Stop(ctx, h, hypervisor.StopOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHotplugPortsInArgs: every VM has the hot-plug root ports, one pool
// that network NICs and volumes share: a VM started with the most NICs
// still has a free port for each volume it may have.
func TestHotplugPortsInArgs(t *testing.T) {
	cfg := hypervisor.VMConfig{Name: "x"}
	for i := 0; i < NICSlots; i++ {
		cfg.NICs = append(cfg.NICs, hypervisor.NICConfig{Tap: fmt.Sprintf("pvt%d", i), MAC: fmt.Sprintf("52:54:00:00:00:%02x", i)})
	}
	a := BuildArgs(cfg, Paths{}, "tcg")
	ports, used := 0, map[string]bool{}
	for i, v := range a {
		if v != "-device" {
			continue
		}
		if strings.HasPrefix(a[i+1], "pcie-root-port,") {
			ports++
		}
		if _, bus, ok := strings.Cut(a[i+1], ",bus=pvslot"); ok {
			used[bus] = true
		}
	}
	if ports != HotplugPorts || !slices.Contains(a, "pcie-root-port,id=pvslot0,bus=pcie.0,chassis=1") {
		t.Fatalf("args have %d hot-plug ports, want %d: %q", ports, HotplugPorts, a)
	}
	if len(used) != NICSlots || ports-len(used) < hypervisor.MaxVolumes {
		t.Fatalf("%d NICs take %d ports of %d: fewer than %d left for volumes", NICSlots, len(used), ports, hypervisor.MaxVolumes)
	}
}

// TestFreeSlotSkipsNICsAndVolumes: a port holding either kind is taken.
func TestFreeSlotSkipsNICsAndVolumes(t *testing.T) {
	have := map[string]int{"pvnic-525400000001": 0, "vol-abc": 1, "pvnic-525400000002": 3}
	if k := freeSlot(have); k != 2 {
		t.Fatalf("free slot %d, want 2", k)
	}
	for k := 0; k < HotplugPorts; k++ {
		have[fmt.Sprintf("vol-%d", k)] = k
	}
	if k := freeSlot(have); k != -1 {
		t.Fatalf("free slot %d with every port taken, want -1", k)
	}
}

// BenchmarkVolumeHotplug measures plugging a volume into a running guest
// and out again: the QMP attach (fd set, nodes, throttle group, device),
// the time until the guest has seen the disk and read it (bounded below
// by the guest script's 200 ms poll), and the detach (device_del until
// the guest released the device and QEMU closed the file).
//
//	go test -run '^$' -bench VolumeHotplug -benchtime 10x ./internal/hypervisor/qemu/
func BenchmarkVolumeHotplug(b *testing.B) {
	guest.RequireQEMU(b)
	g := guest.Build(b)
	guest.RequireRun(b, g)
	ctx := context.Background()
	d, err := New(Config{StateDir: b.TempDir(), RunDir: filepath.Join(b.TempDir(), "run")})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	vol := filepath.Join(b.TempDir(), "data1.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", vol, "64M").CombinedOutput(); err != nil {
		b.Fatalf("qemu-img create: %v: %s", err, out)
	}
	cfg := hypervisor.VMConfig{Name: "bench", UID: "0b6a1f0e-3333-4c6d-8e9f-0a1b2c3d4e5f", VCPUs: 1, MemoryMiB: 256,
		Disks: []hypervisor.DiskConfig{{Name: "root", BackingFile: g.Disk}}, Kernel: g.Kernel, Initrd: g.Initrd,
		Cmdline: guest.RunCmdline(volumeWatcher)}
	h, err := d.Create(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Stop(ctx, h, hypervisor.StopOptions{Force: true})
	if err := d.Start(ctx, h, cfg); err != nil {
		b.Fatal(err)
	}
	count := func(s string) int {
		log, _ := d.ConsoleLog(ctx, h, 0)
		return strings.Count(string(log), s)
	}
	waitCount := func(s string, n int) {
		deadline := time.Now().Add(2 * time.Minute)
		for count(s) < n {
			if time.Now().After(deadline) {
				b.Fatalf("guest did not print %q %d times", s, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount("polyvisor-guest: run begin", 1)
	id := hypervisor.VolumeID("data1")
	var attach, seen, detach time.Duration
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := d.AttachVolume(ctx, h, hypervisor.VolumeConfig{Name: "data1", Path: vol}); err != nil {
			b.Fatal(err)
		}
		attach += time.Since(t0)
		waitCount("pv-vol dev=", i+1)
		seen += time.Since(t0)
		t1 := time.Now()
		if err := d.DetachVolume(ctx, h, id); err != nil {
			b.Fatal(err)
		}
		detach += time.Since(t1)
		waitCount("pv-vol gone", i+1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(attach.Milliseconds())/n, "attach-ms")
	b.ReportMetric(float64(seen.Milliseconds())/n, "guest-sees-ms")
	b.ReportMetric(float64(detach.Milliseconds())/n, "detach-ms")
}
