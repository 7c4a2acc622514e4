package v2v

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// fakeTool writes a shell script standing in for virt-v2v-in-place.
func fakeTool(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "virt-v2v-in-place")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// jobDisk makes a small qcow2 in a job directory.
func jobDisk(t *testing.T) (dir, disk string) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	dir = t.TempDir()
	disk = filepath.Join(dir, "vm", "root.qcow2")
	if err := os.MkdirAll(filepath.Dir(disk), 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", disk, "16M")
	return dir, disk
}

// TestAdaptRunsConfinedAndBounded: the tool gets the disk, a scratch
// directory of its own under the job as its working dir, HOME and TMPDIR,
// and a bare environment; the scratch directory goes when it ends.
func TestAdaptRunsConfinedAndBounded(t *testing.T) {
	dir, disk := jobDisk(t)
	seen := filepath.Join(t.TempDir(), "seen")
	tool := fakeTool(t, `{ echo "args=$*"; echo "pwd=$(pwd)"; env | sort; } > `+seen+"\n")
	t.Setenv("POLYVISOR_SECRET", "leaked")
	if err := Adapt(context.Background(), tool, "qemu-img", dir, disk, AdaptOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"args=-i disk -if qcow2 " + disk, "pwd=" + dir + "/adapt-", "HOME=" + dir + "/adapt-", "LIBGUESTFS_BACKEND=direct"} {
		if !strings.Contains(got, want) {
			t.Errorf("the tool saw\n%s\nwithout %q", got, want)
		}
	}
	if strings.Contains(got, "POLYVISOR_SECRET") {
		t.Errorf("the tool inherited the environment:\n%s", got)
	}
	if got := listFiles(t, dir); len(got) != 1 {
		t.Errorf("the job directory holds %v after the run, want only the disk", got)
	}
}

// TestAdaptFailureSaysWhy: a conversion that fails reports the tool's
// error lines, from output kept bounded.
func TestAdaptFailureSaysWhy(t *testing.T) {
	dir, disk := jobDisk(t)
	tool := fakeTool(t, `i=0; while [ $i -lt 2000 ]; do echo "[ 1.0] noise line $i ......................................................"; i=$((i+1)); done
echo "virt-v2v-in-place: error: inspection could not detect the source guest (or physical machine)." >&2
exit 1
`)
	err := Adapt(context.Background(), tool, "qemu-img", dir, disk, AdaptOptions{MaxOutput: 4 << 10})
	if err == nil || !strings.Contains(err.Error(), "inspection could not detect the source guest") {
		t.Fatalf("Adapt = %v, want the tool's error", err)
	}
	if len(err.Error()) > 1024 {
		t.Errorf("the error carries %d bytes of output", len(err.Error()))
	}
}

// TestAdaptTimeoutKillsEverything: past its timeout the tool and what it
// started are killed, and the error says so.
func TestAdaptTimeoutKillsEverything(t *testing.T) {
	dir, disk := jobDisk(t)
	pidFile := filepath.Join(t.TempDir(), "child")
	tool := fakeTool(t, "sleep 300 &\necho $! > "+pidFile+"\nwait\n")
	err := Adapt(context.Background(), tool, "qemu-img", dir, disk, AdaptOptions{Timeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "stopped after 500ms") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Adapt = %v, want a timeout", err)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			break // gone, or a zombie waiting for init
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tool's child %s outlived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAdaptRefusesDisks: a disk outside the job directory, a link, or a
// disk a running QEMU holds is never converted; the tool does not run.
func TestAdaptRefusesDisks(t *testing.T) {
	dir, disk := jobDisk(t)
	ran := filepath.Join(t.TempDir(), "ran")
	tool := fakeTool(t, "touch "+ran+"\n")
	_, outside := jobDisk(t)
	link := filepath.Join(dir, "vm", "link.qcow2")
	if err := os.Symlink(disk, link); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]string{"outside": outside, "link": link, "the job dir": dir} {
		if err := Adapt(context.Background(), tool, "qemu-img", dir, d, AdaptOptions{}); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: Adapt = %v, want a refusal", name, err)
		}
	}

	guest.RequireQEMU(t)
	qemu := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-nodefaults", "-display", "none", "-S",
		"-blockdev", "driver=qcow2,node-name=d0,file.driver=file,file.filename="+disk, "-device", "virtio-blk-pci,drive=d0")
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { qemu.Process.Kill(); qemu.Wait() }()
	var err error
	for i := 0; i < 100; i++ { // until QEMU holds its lock
		if err = Adapt(context.Background(), tool, "qemu-img", dir, disk, AdaptOptions{}); errors.Is(err, ErrDiskInUse) {
			break
		}
		os.Remove(ran)
		time.Sleep(50 * time.Millisecond)
	}
	if !errors.Is(err, ErrDiskInUse) {
		t.Fatalf("Adapt on a disk QEMU runs = %v, want ErrDiskInUse", err)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Errorf("the tool ran on a disk in use")
	}
}

// TestCopyFallsBackWhenConversionFails: a plan that converts the guest
// with virt-v2v-in-place, on a disk the tool cannot convert (no
// recognisable OS), keeps the disk as copied, says why in its result, and
// the VM made from it gets compatible devices.
func TestCopyFallsBackWhenConversionFails(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	tool := fakeTool(t, `echo "virt-v2v-in-place: error: inspection could not detect the source guest (or physical machine)." >&2; exit 1`+"\n")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.vmdk")
	convertGuest(t, g, "vmdk", "", src)
	hw := Hardware{Name: "legacy", VCPUs: 1, MemoryMiB: 256, Firmware: FirmwareBIOS, GuestOS: "debian10_64Guest",
		Disks: []Disk{{Name: "Hard disk 1", Bus: BusSCSI, Source: DiskSource{Kind: SourceFile, Path: src}}},
		NICs:  []NIC{{Network: "VM Network", Model: "vmxnet3"}}}
	p := PlanVM(hw, Options{NetworkMap: map[string]string{"*": "user"}, VirtV2V: tool})
	if p.Adaptation != AdaptVirtV2V || len(p.Blockers) > 0 {
		t.Fatalf("plan %+v", p)
	}
	res, err := (&Copier{Dir: filepath.Join(dir, "job"), VirtV2V: tool}).CopyVM(context.Background(), p)
	if err != nil {
		t.Fatalf("CopyVM: %v", err)
	}
	if !strings.Contains(res[0].AdaptError, "inspection could not detect") {
		t.Fatalf("result %+v, want the conversion's failure", res[0])
	}
	run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", g.Boot, res[0].Path)
	c := p.Compatible("virt-v2v-in-place could not convert it: " + res[0].AdaptError).Create()
	if c.Disks[0].Bus != api.DiskBusSATA || c.NICs[0].Model != api.NICModelE1000 {
		t.Errorf("create after the failed conversion: %+v", c)
	}
	// A second run resumes: the failure is kept, the tool is not run again.
	res2, err := (&Copier{Dir: filepath.Join(dir, "job"), VirtV2V: "/nonexistent"}).CopyVM(context.Background(), p)
	if err != nil || res2[0].AdaptError != res[0].AdaptError {
		t.Errorf("resumed: %+v, %v", res2, err)
	}
}

// TestAdaptRealVirtV2V runs Debian's virt-v2v-in-place, where installed,
// on a disk with no operating system: it fails, and says why.
func TestAdaptRealVirtV2V(t *testing.T) {
	tool, err := exec.LookPath("virt-v2v-in-place")
	if err != nil {
		t.Skip("virt-v2v-in-place is not installed (apt-get install virt-v2v nbdkit); CI does not install it, see docs/MIGRATION.md")
	}
	dir, disk := jobDisk(t)
	t0 := time.Now()
	err = Adapt(context.Background(), tool, "qemu-img", dir, disk, AdaptOptions{Timeout: 10 * time.Minute})
	t.Logf("virt-v2v-in-place on an empty disk: %v after %v", err, time.Since(t0).Round(100*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "virt-v2v-in-place") || !strings.Contains(err.Error(), "error:") {
		t.Fatalf("Adapt = %v, want a failure naming the tool's error", err)
	}
}
