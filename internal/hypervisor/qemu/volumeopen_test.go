package qemu

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// TestOpenVolumeRefusesLinksAndSpecialFiles: a volume's file, which
// another host of a shared pool could replace, is opened only as a regular
// file and never through a symbolic link (to a file of this host's).
func TestOpenVolumeRefusesLinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "v.qcow2")
	if err := os.WriteFile(file, []byte("qcow2"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.qcow2")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.qcow2")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f, err := openVolume(ctx, &hypervisor.VolumeConfig{Name: "v", Path: file})
	if err != nil {
		t.Fatalf("a regular file: %v", err)
	}
	f.Close()
	for _, p := range []string{link, fifo} {
		if f, err := openVolume(ctx, &hypervisor.VolumeConfig{Name: "v", Path: p}); err == nil {
			f.Close()
			t.Errorf("%s was opened as a volume", filepath.Base(p))
		}
	}
}
