package v2v

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slowStream is a file streamed at about 8 MiB a second.
type slowStream struct{ fileStream }

func (s *slowStream) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	rc, err := s.fileStream.Open(ctx, off)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{readerFunc(func(p []byte) (int, error) {
		time.Sleep(8 * time.Millisecond)
		return rc.Read(p[:min(len(p), 64<<10)])
	}), rc}, nil
}

// killPlan is the plan of the VM whose raw disk the killed copy streams.
func killPlan() VMPlan {
	hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream}}}}
	return PlanVM(hw, Options{Host: "h"})
}

// TestKilledCopyChild is the process TestRawCopyKilledResumes and
// TestVMDKCopyKilledResumes kill.
func TestKilledCopyChild(t *testing.T) {
	job, disk := os.Getenv("POLYVISOR_V2V_KILL_JOB"), os.Getenv("POLYVISOR_V2V_KILL_DISK")
	if job == "" {
		t.Skip("run by TestRawCopyKilledResumes")
	}
	st := &slowStream{fileStream{path: disk}}
	c := &Copier{Dir: job, CheckpointBytes: 4 << 20, Streams: func(context.Context, string, Disk) (Stream, error) { return st, nil }}
	c.CopyVM(context.Background(), killPlan())
}

// TestRawCopyKilledResumes: a process copying a raw stream into its qcow2
// is killed (SIGKILL) mid-copy; its qemu-storage-daemon dies with it and
// leaves the qcow2 to the copy that resumes from the checkpoint, whose
// result is the stream.
func TestRawCopyKilledResumes(t *testing.T) {
	dir := t.TempDir()
	disk, job := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "job")
	data := make([]byte, 48<<20)
	for i := range data {
		if (i>>20)%3 != 2 {
			data[i] = byte(i*31 + 7)
		}
	}
	os.WriteFile(disk, data, 0o600)
	was, resumed, res := killAndResume(t, disk, job)
	if was.Mode != modeDirect || resumed < was.Offset || resumed == 0 {
		t.Errorf("resumed at %d, the killed copy's checkpoint %+v", resumed, was)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", disk, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the resumed copy differs: %v: %s", err, out)
	}
}

// TestVMDKCopyKilledResumes: the same with a streamOptimized VMDK's
// stream: the copy resumes at its checkpoint's grain marker and disk
// offset, and its result is the disk.
func TestVMDKCopyKilledResumes(t *testing.T) {
	dir := t.TempDir()
	raw, disk, job := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.vmdk"), filepath.Join(dir, "job")
	data := make([]byte, 48<<20)
	r := rand.NewChaCha8([32]byte{2})
	for i := 0; i < len(data); i += 1 << 20 {
		if (i>>20)%3 != 2 {
			r.Read(data[i : i+1<<20]) // random: its grains do not shrink
		}
	}
	os.WriteFile(raw, data, 0o600)
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, disk)
	was, resumed, res := killAndResume(t, disk, job)
	if was.Mode != modeVMDK || was.ContentOffset == 0 || resumed != was.ContentOffset {
		t.Errorf("resumed at %d, the killed copy's checkpoint %+v", resumed, was)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the resumed copy differs: %v: %s", err, out)
	}
}

// killAndResume runs the copy of the stream of disk into job in a child
// process, kills it (SIGKILL) once its checkpoint passed 8 MiB of the
// stream, and copies again: the checkpoint it was killed at, where the
// copy said it resumed, and its result.
func killAndResume(t *testing.T, disk, job string) (checkpoint, int64, []DiskResult) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledCopyChild$")
	cmd.Env = append(os.Environ(), "POLYVISOR_V2V_KILL_JOB="+job, "POLYVISOR_V2V_KILL_DISK="+disk)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(job, "lv", "root.checkpoint.json")
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, _ := loadCheckpoint(ck)
		if c.Offset >= 8<<20 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the child's copy did not pass 8 MiB within 60 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	was, _ := loadCheckpoint(ck)
	var resumed int64
	c := &Copier{Dir: job, CheckpointBytes: 4 << 20,
		Streams:  func(context.Context, string, Disk) (Stream, error) { return &fileStream{path: disk}, nil },
		Progress: func(p Progress) { resumed = max(resumed, p.Resumed) }}
	var res []DiskResult
	var err error
	// The daemon gets its parent's death signal at once, but may take a
	// moment to let the qcow2's lock go.
	for range 50 {
		if res, err = c.CopyVM(context.Background(), killPlan()); err == nil || !strings.Contains(err.Error(), "lock") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	return was, resumed, res
}
