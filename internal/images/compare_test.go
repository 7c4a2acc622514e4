package images

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// TestCompare reads two disks back through qemu-img: a raw disk and its
// qcow2 conversion are the same; a byte changed is a *MismatchError; a
// file that is no image of the format named is an error, not a mismatch.
func TestCompare(t *testing.T) {
	peer.Binary(t, "qemu-img", "apt-get install qemu-utils")
	ctx := context.Background()
	dir := t.TempDir()
	raw := filepath.Join(dir, "a.raw")
	b := make([]byte, 1<<20)
	b[4096] = 7
	if err := os.WriteFile(raw, b, 0o600); err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(dir, "a.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := Compare(ctx, FormatRaw, raw, FormatQCOW2, qcow); err != nil {
		t.Fatalf("a disk and its conversion: %v", err)
	}
	b[8192] = 1
	other := filepath.Join(dir, "b.raw")
	os.WriteFile(other, b, 0o600)
	var mm *MismatchError
	if err := Compare(ctx, FormatRaw, other, FormatQCOW2, qcow); !errors.As(err, &mm) {
		t.Fatalf("a changed byte: %v, want a MismatchError", err)
	}
	if err := Compare(ctx, FormatQCOW2, raw, FormatQCOW2, qcow); err == nil || errors.As(err, &mm) {
		t.Fatalf("a raw file read as qcow2: %v, want an error that is not a mismatch", err)
	}
}
