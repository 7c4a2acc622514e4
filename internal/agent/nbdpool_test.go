package agent

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// TestNBDExports drives a real qemu-storage-daemon: the agent starts it
// for the pool, exports a volume's file (listed by NBD_OPT_LIST, as a VM's
// host asks before it boots from it), finds the running daemon again
// rather than starting a second, takes the export down so qemu-img can
// take the file's lock, and ends the daemon with the pool.
func TestNBDExports(t *testing.T) {
	ctx := context.Background()
	dir, addr := nbdTestPool(t)
	pool := &api.Pool{Meta: api.Meta{Name: "n"}, Spec: api.PoolSpec{Kind: api.PoolNBD, Path: dir, Hosts: []string{"h1", "h2"}, Address: addr}}
	vs := newVolumes(&Agent{cfg: Config{Host: "h1"}, log: slog.Default()})
	if !vs.nbdServing(pool) || newVolumes(&Agent{cfg: Config{Host: "h2"}, log: slog.Default()}).nbdServing(pool) {
		t.Fatal("the serving host is the pool's first")
	}
	path := filepath.Join(dir, "v.qcow2")
	if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", path, "16M"); err != nil {
		t.Fatal(err)
	}
	v := &api.Volume{Meta: api.Meta{Name: "v"}, Spec: api.VolumeSpec{Path: path, Export: "nbd://" + addr + "/uid-1"}}
	t.Cleanup(func() { vs.stopNBD(context.Background(), pool) })
	if err := vs.export(ctx, pool, v); err != nil {
		t.Fatal(err)
	}
	pid, _ := os.ReadFile(filepath.Join(dir, ".nbd", "qsd.pid"))
	if ok, err := nbdExported(ctx, v.Spec.Export); err != nil || !ok {
		t.Fatalf("export listed: %v %v", ok, err)
	}
	if ok, err := nbdExported(ctx, "nbd://"+addr+"/uid-2"); err != nil || ok {
		t.Fatalf("another export listed: %v %v", ok, err)
	}
	if err := vs.export(ctx, pool, v); err != nil {
		t.Fatalf("exporting again: %v", err)
	}
	if pid2, _ := os.ReadFile(filepath.Join(dir, ".nbd", "qsd.pid")); string(pid2) != string(pid) {
		t.Fatalf("a second daemon started: pid %s then %s", pid, pid2)
	}
	if err := qemuImg(ctx, "resize", "-f", "qcow2", path, "32M"); err == nil {
		t.Fatal("qemu-img resized a file the daemon holds")
	}
	if err := vs.unexport(ctx, pool, v); err != nil {
		t.Fatal(err)
	}
	if ok, err := nbdExported(ctx, v.Spec.Export); err != nil || ok {
		t.Fatalf("export listed after unexport: %v %v", ok, err)
	}
	if err := qemuImg(ctx, "resize", "-f", "qcow2", path, "32M"); err != nil {
		t.Fatalf("resizing the file the daemon let go: %v", err)
	}
	if err := vs.unexport(ctx, pool, v); err != nil {
		t.Fatalf("unexporting again: %v", err)
	}
	vs.stopNBD(ctx, pool)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := nbdExported(ctx, v.Spec.Export); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon still answers after its pool is gone")
		}
	}
}

// TestNeedsLock: a volume the nbd daemon serves is taken from it only when
// qemu-img must change its file (grow it, take a snapshot, create it); a
// detach, which changes nothing in the file, leaves the export up. The
// size is read while the daemon holds the file.
func TestNeedsLock(t *testing.T) {
	ctx := context.Background()
	dir, addr := nbdTestPool(t)
	pool := &api.Pool{Meta: api.Meta{Name: "n"}, Spec: api.PoolSpec{Kind: api.PoolNBD, Path: dir, Hosts: []string{"h1"}, Address: addr}}
	vs := newVolumes(&Agent{cfg: Config{Host: "h1"}, log: slog.Default()})
	path := filepath.Join(dir, "v.qcow2")
	if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", path, "16M"); err != nil {
		t.Fatal(err)
	}
	v := &api.Volume{Meta: api.Meta{Name: "v"}, Spec: api.VolumeSpec{Path: path, SizeMiB: 16, Export: "nbd://" + addr + "/uid-1"}}
	t.Cleanup(func() { vs.stopNBD(context.Background(), pool) })
	if err := vs.export(ctx, pool, v); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		step  string
		size  int64
		snaps []string
		want  bool
	}{
		{"as it is", 16, nil, false},
		{"smaller than the file", 8, nil, false},
		{"to grow", 32, nil, true},
		{"a snapshot to take", 16, []string{"s1"}, true},
	} {
		w := *v
		w.Spec.SizeMiB, w.Spec.Snapshots = c.size, c.snaps
		if got := needsLock(ctx, &w); got != c.want {
			t.Errorf("%s: needs the lock %v, want %v", c.step, got, c.want)
		}
	}
	if err := os.WriteFile(snapshotFile(path, "s1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w := *v
	w.Spec.Snapshots = []string{"s1"}
	if needsLock(ctx, &w) {
		t.Error("a snapshot already taken needs the lock")
	}
	w.Spec.Path = filepath.Join(dir, "absent.qcow2")
	if !needsLock(ctx, &w) {
		t.Error("a file to create does not need the lock")
	}
}

// nbdTestPool is an nbd pool's directory and a free address for its
// daemon; it skips without QEMU's storage tools.
func nbdTestPool(t *testing.T) (dir, addr string) {
	t.Helper()
	for _, bin := range []string{"qemu-storage-daemon", "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (apt-get install qemu-system-x86 qemu-utils)", bin)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	return t.TempDir(), addr
}
