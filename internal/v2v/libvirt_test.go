package v2v

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/provider/libvirt"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

const libvirtSocket = "/var/run/libvirt/libvirt-sock"

// requireLibvirtd starts scripts/libvirtd.sh when no daemon answers, or
// ends the test as a missing peer.
func requireLibvirtd(t *testing.T) {
	t.Helper()
	peer.Binary(t, "virsh", "apt-get install libvirt-clients")
	if c, err := net.DialTimeout("unix", libvirtSocket, time.Second); err == nil {
		c.Close()
		return
	}
	if os.Geteuid() != 0 {
		peer.Missing(t, "no libvirtd on %s and not root: cannot start one with scripts/libvirtd.sh", libvirtSocket)
	}
	if out, err := exec.Command("bash", "../../scripts/libvirtd.sh", "start").CombinedOutput(); err != nil {
		peer.Missing(t, "scripts/libvirtd.sh start: %v\n%s", err, out)
	}
}

func virsh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", "qemu:///system"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestLibvirtDomainMoves: a TCG domain of a real libvirtd boots the test
// guest from a qcow2 volume of a storage pool; it is read as a migration
// source (its XML for the hardware, its volume through libvirt's download
// stream), copied, and the copy boots as a Polyvisor VM's disk does. The
// source domain and its volume are left as they were.
func TestLibvirtDomainMoves(t *testing.T) {
	guest.RequireQEMU(t)
	requireLibvirtd(t)
	g := guest.Build(t)
	dir := t.TempDir()
	suffix := fmt.Sprint(time.Now().UnixNano() % 1e9)
	pool, dom := "v2vtest-"+suffix, "v2v-src-"+suffix
	poolDir := filepath.Join(dir, "pool")
	os.Mkdir(poolDir, 0o755)
	virsh(t, "pool-create-as", pool, "dir", "--target", poolDir)
	t.Cleanup(func() { exec.Command("virsh", "-c", "qemu:///system", "pool-destroy", pool).Run() })
	vol := filepath.Join(poolDir, "root.qcow2")
	convertGuest(t, g, "qcow2", "", vol)
	virsh(t, "pool-refresh", pool)
	serial := filepath.Join(dir, "serial.log")
	xml := `<domain type='qemu'><name>` + dom + `</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo></metadata>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='` + pool + `' volume='root.qcow2'/><target dev='sda' bus='sata'/></disk>
    <interface type='ethernet'><mac address='52:54:00:aa:00:01'/><model type='e1000'/></interface>
    <serial type='file'><source path='` + serial + `'/><target port='0'/></serial>
  </devices></domain>`
	xmlFile := filepath.Join(dir, "dom.xml")
	os.WriteFile(xmlFile, []byte(xml), 0o600)
	virsh(t, "define", xmlFile)
	t.Cleanup(func() {
		exec.Command("virsh", "-c", "qemu:///system", "destroy", dom).Run()
		exec.Command("virsh", "-c", "qemu:///system", "undefine", dom).Run()
	})
	virsh(t, "start", dom)
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, _ := os.ReadFile(serial)
		if bytes.Contains(b, []byte(guest.ReadyMarker)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the source domain did not boot; serial:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	virsh(t, "destroy", dom) // a cold copy

	p := libvirt.New(provider.Config{URL: "qemu:///system"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if err := p.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	src := LibvirtSource{Provider: p}
	hw, running, err := src.Hardware(ctx, dom)
	if err != nil {
		t.Fatal(err)
	}
	if running || hw.VCPUs != 1 || hw.MemoryMiB != 256 || hw.Firmware != FirmwareBIOS || hw.GuestOS != "http://debian.org/debian/12" {
		t.Fatalf("hardware %+v running %v", hw, running)
	}
	if len(hw.Disks) != 1 || hw.Disks[0].Bus != BusSATA || hw.Disks[0].Source.Format != "qcow2" || hw.Disks[0].CapacityBytes != virtualSize(t, "qcow2", vol) {
		t.Fatalf("disks %+v", hw.Disks)
	}
	if len(hw.NICs) != 1 || hw.NICs[0].MAC != "52:54:00:aa:00:01" || hw.NICs[0].Model != "e1000" {
		t.Fatalf("nics %+v", hw.NICs)
	}
	plan := PlanVM(hw, Options{Host: "h1", NetworkMap: map[string]string{"*": "user"}})
	if len(plan.Blockers) > 0 {
		t.Fatal(plan.Blockers)
	}
	var resumed []int64
	c := &Copier{Dir: filepath.Join(dir, "job"), Streams: src.Streams(), CheckpointBytes: 4 << 20, Progress: func(pr Progress) {
		if pr.Phase == PhaseStream && pr.Done == pr.Total {
			resumed = append(resumed, pr.Resumed)
		}
	}}
	res, err := c.CopyVM(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(resumed) == 0 {
		t.Error("the disk did not go through the download stream")
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", vol, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the copy differs from the volume: %v: %s", err, out)
	}
	bootDisk(t, res[0].Path, plan.VCPUs, plan.MemoryMiB)
	// The source is left as it was: defined, shut off, its volume in place.
	if out := virsh(t, "domstate", dom); !strings.Contains(out, "shut off") {
		t.Errorf("source domain is %q", out)
	}
	if _, err := os.Stat(vol); err != nil {
		t.Errorf("source volume: %v", err)
	}
}

// TestLibvirtRawVolumeStreamsIntoQCOW2: a raw volume of a real libvirtd's
// pool is written into its qcow2 as libvirt's download stream brings it
// (nothing staged), and is the volume. A volume declared raw whose bytes
// are a qcow2 is found out by its first bytes: its stream is closed early
// and it is staged and converted with the image import's checks, and the
// provider's connection still answers after that abandoned download.
func TestLibvirtRawVolumeStreamsIntoQCOW2(t *testing.T) {
	guest.RequireQEMU(t)
	requireLibvirtd(t)
	g := guest.Build(t)
	dir := t.TempDir()
	pool := "v2vraw-" + fmt.Sprint(time.Now().UnixNano()%1e9)
	poolDir := filepath.Join(dir, "pool")
	os.Mkdir(poolDir, 0o755)
	virsh(t, "pool-create-as", pool, "dir", "--target", poolDir)
	t.Cleanup(func() { exec.Command("virsh", "-c", "qemu:///system", "pool-destroy", pool).Run() })
	raw, disguised := filepath.Join(poolDir, "root.raw"), filepath.Join(poolDir, "other.img")
	convertGuest(t, g, "raw", "", raw)
	convertGuest(t, g, "qcow2", "", disguised)
	virsh(t, "pool-refresh", pool)
	p := libvirt.New(provider.Config{URL: "qemu:///system"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if err := p.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	src := LibvirtSource{Provider: p}
	for _, tc := range []struct {
		vol, format string
		wantFiles   int
	}{{raw, "raw", 2}, {disguised, "qcow2", 2}} {
		hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio,
			Source: DiskSource{Kind: SourceStream, Ref: tc.vol, Format: "raw"}}}}
		c := &Copier{Dir: filepath.Join(t.TempDir(), "job"), Streams: src.Streams()}
		res, err := c.CopyVM(ctx, PlanVM(hw, Options{Host: "h"}))
		if err != nil {
			t.Fatalf("%s: %v", tc.vol, err)
		}
		if res[0].SourceFormat != tc.format {
			t.Errorf("%s copied as %q, want %q", tc.vol, res[0].SourceFormat, tc.format)
		}
		if out, err := exec.Command("qemu-img", "compare", "-f", tc.format, "-F", "qcow2", tc.vol, res[0].Path).CombinedOutput(); err != nil {
			t.Fatalf("the copy differs from %s: %v: %s", tc.vol, err, out)
		}
		if got := listFiles(t, c.Dir); len(got) != tc.wantFiles {
			t.Errorf("job directory holds %v, want the qcow2 and its checkpoint", got)
		}
	}
	if _, err := p.VolumeLength(ctx, raw); err != nil {
		t.Fatalf("the provider's connection after an abandoned download: %v", err)
	}
}
