package qemu

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// receiveDialer connects each disk channel the source asks for to the
// destination's ReceiveDisk through a socket pair, and collects what each
// returned.
func receiveDialer(t testing.TB, dst *Driver, h *hypervisor.Handle, wg *sync.WaitGroup, errs chan<- error) hypervisor.MigrationDialer {
	return func(ctx context.Context, channel string) (net.Conn, error) {
		conns, err := connPair("move-" + channel)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- dst.ReceiveDisk(ctx, h, channel, conns[1])
		}()
		return conns[0], nil
	}
}

// TestMoveStoppedDisksRealTools moves a stopped VM's disks with qemu-nbd
// and qemu-img: the root overlay with a marker written into it and a blank
// data disk with data, and a disk on shared storage that is not copied.
// The target's disks read as the source's (qemu-img compare), the shared
// one is untouched and nothing is left running.
func TestMoveStoppedDisksRealTools(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	ctx := context.Background()
	src := newTestDriver(t, filepath.Join(t.TempDir(), "src"))
	dst := newTestDriver(t, filepath.Join(t.TempDir(), "dst"))
	shared := filepath.Join(t.TempDir(), "vol.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", shared, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	before, _ := os.Stat(shared)
	cfg := guestConfig(g, "resting", "0c1d2e3f-4a5b-4c6d-8e7f-000000000042")
	cfg.NICs = nil
	cfg.Disks = append(cfg.Disks,
		hypervisor.DiskConfig{Name: "data", SizeMiB: 64},
		hypervisor.DiskConfig{Name: "vol", SharedPath: shared})
	h, err := src.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ disk, cmd string }{
		{h.Disks[0].Path, "write -P 0x6d 1M 64k"}, // over the image's data
		{h.Disks[0].Path, "write -z 0 4k"},        // zeros over the image's boot sector
		{h.Disks[1].Path, "write -P 0x5a 8M 4M"},
	} {
		if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", w.cmd, w.disk).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io %s: %v: %s", w.cmd, err, out)
		}
	}
	dh, err := dst.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !dh.Disks[2].Shared || dh.Disks[2].Path != shared {
		t.Fatalf("shared disk on the target: %+v", dh.Disks[2])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	if err := src.SendDisks(ctx, h, receiveDialer(t, dst, dh, &wg, errs)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		n++
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != 2 {
		t.Errorf("%d disks received, want 2 (the shared one is not copied)", n)
	}
	for i := 0; i < 2; i++ {
		if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", h.Disks[i].Path, dh.Disks[i].Path).CombinedOutput(); err != nil {
			t.Errorf("disk %s differs on the target: %v: %s", h.Disks[i].Name, err, out)
		}
	}
	if after, _ := os.Stat(shared); !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the shared disk was written")
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-nbd.*"+h.Disks[0].Path).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("qemu-nbd still runs: %s", out)
	}
	// A target that has no such disk refuses the channel.
	err = dst.ReceiveDisk(ctx, dh, hypervisor.ChannelDisk("vol"), nopConn{})
	if err == nil || !strings.Contains(err.Error(), "no such disk") {
		t.Errorf("receiving the shared disk: %v, want no such disk to copy", err)
	}
	// Destroying the moved VM leaves the shared disk.
	if err := dst.Destroy(ctx, dh, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(shared); err != nil {
		t.Errorf("destroying the vm took its shared disk: %v", err)
	}
}

type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
