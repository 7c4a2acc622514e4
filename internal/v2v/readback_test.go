package v2v

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

func TestExtentsCover(t *testing.T) {
	e := extents{{0, 10}, {20, 30}, {30, 31}, {40, 50}}
	for _, c := range []struct {
		a, b int64
		want bool
	}{
		{0, 10, true}, {0, 11, false}, {5, 10, true}, {9, 10, true}, {10, 11, false},
		{19, 20, false}, {20, 30, true}, {25, 31, false}, // within two ranges, not one
		{40, 50, true}, {45, 55, false}, {50, 51, false}, {60, 61, false},
	} {
		if got := e.cover(c.a, c.b); got != c.want {
			t.Errorf("[%d, %d) covered: %v, want %v", c.a, c.b, got, c.want)
		}
	}
	if (extents{}).cover(0, 1) {
		t.Error("no ranges cover something")
	}
}

// digestOf is the content digest of a raw file, chunk by chunk.
func digestOf(t *testing.T, b []byte) string {
	t.Helper()
	d, _ := newContentDigest(nil)
	for len(b) > 0 {
		k := min(len(b), streamChunk)
		d.add(b[:k])
		b = b[k:]
	}
	return d.sum()
}

// TestReadBackSkipsOnlyWhatReadsAsZeros: the read-back reads the chunks
// the qcow2 holds data in and takes those its metadata says read as zeros
// for zeros; it gives the digest of the disk's whole contents, and a write
// into a range that was zeros is seen.
func TestReadBackSkipsOnlyWhatReadsAsZeros(t *testing.T) {
	guest.RequireQEMU(t)
	dir := t.TempDir()
	const size = 9 << 20 // nine chunks, the last partly past a request
	raw := make([]byte, size)
	for _, c := range []int{0, 2, 3, 8} {
		rand.Read(raw[c*streamChunk : (c+1)*streamChunk])
	}
	rawPath, q := filepath.Join(dir, "d.raw"), filepath.Join(dir, "d.qcow2")
	if err := os.WriteFile(rawPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", rawPath, q).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	ctx := context.Background()
	exp, err := exportQCOW2(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.stop()
	zeros, err := zeroRanges(ctx, q, size)
	if err != nil {
		t.Fatal(err)
	}
	if !zeros.cover(1*streamChunk, 2*streamChunk) || !zeros.cover(4*streamChunk, 8*streamChunk) || zeros.cover(0, 1) || zeros.cover(8*streamChunk, size) {
		t.Fatalf("zero ranges %v do not match the disk (data in chunks 0, 2, 3, 8)", zeros)
	}
	var c Copier
	p, d := VMPlan{Name: "vm"}, DiskPlan{Name: "vda"}
	got, err := c.readBack(ctx, p, d, exp, size)
	if err != nil {
		t.Fatal(err)
	}
	if want := digestOf(t, raw); got != want {
		t.Fatalf("read back as %s, the disk is %s", got, want)
	}
	// A sector written in chunk 5, which was zeros.
	sector := make([]byte, 512)
	rand.Read(sector)
	if err := exp.WriteAt(sector, 5*streamChunk+4096); err != nil {
		t.Fatal(err)
	}
	copy(raw[5*streamChunk+4096:], sector)
	got, err = c.readBack(ctx, p, d, exp, size)
	if err != nil {
		t.Fatal(err)
	}
	if want := digestOf(t, raw); got != want {
		t.Fatalf("after a write into zeros: read back as %s, the disk is %s", got, want)
	}
}
