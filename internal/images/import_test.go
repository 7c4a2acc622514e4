package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

const baseSize = 8 << 20

func needQemuImg(t *testing.T) {
	t.Helper()
	peer.Binary(t, "qemu-img", "apt-get install qemu-utils")
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// recordQemuImg replaces the qemu-img this package runs by a wrapper that
// logs each call's arguments, one line each, then runs the real one. It
// returns a function reading the log.
func recordQemuImg(t *testing.T) func() []string {
	t.Helper()
	real := peer.Binary(t, "qemu-img", "apt-get install qemu-utils")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "calls.log")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\nexec %q \"$@\"\n", logPath, real)
	wrapper := filepath.Join(dir, "qemu-img")
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	old := qemuImg
	qemuImg = wrapper
	t.Cleanup(func() { qemuImg = old })
	return func() []string {
		b, _ := os.ReadFile(logPath)
		var lines []string
		for l := range strings.Lines(string(b)) {
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
		return lines
	}
}

// baseRaw writes a raw disk with data scattered through it.
func baseRaw(t *testing.T, dir string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, "base.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	chunk := make([]byte, 64<<10)
	for off := int64(0); off < size; off += size / 8 {
		for i := range chunk {
			chunk[i] = byte(r.Uint32())
		}
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt([]byte("polyvisor-tail"), size-512); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// assertNothingLeft checks that dst does not exist and its directory holds
// no temporary files.
func assertNothingLeft(t *testing.T, dst string) {
	t.Helper()
	if _, err := os.Lstat(dst); err == nil {
		t.Errorf("%s exists after a failed import", dst)
	}
	entries, _ := os.ReadDir(filepath.Dir(dst))
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

func TestImportDiskFormats(t *testing.T) {
	calls := recordQemuImg(t)
	dir := t.TempDir()
	base := baseRaw(t, dir, baseSize)
	tests := []struct {
		name, format string
		opts         string
	}{
		{"raw", "raw", ""},
		{"qcow2", "qcow2", ""},
		{"qcow2-v2", "qcow2", "compat=0.10"},
		{"qcow2-compressed", "qcow2", ""},
		{"vmdk", "vmdk", ""},
		{"vmdk-streamoptimized", "vmdk", "subformat=streamOptimized"},
		{"vpc", "vpc", "force_size=on"},
		{"vpc-fixed", "vpc", "subformat=fixed,force_size=on"},
		{"vhdx", "vhdx", ""},
		{"vdi", "vdi", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := filepath.Join(dir, tt.name+".img")
			args := []string{"convert", "-f", "raw", "-O", tt.format}
			if tt.opts != "" {
				args = append(args, "-o", tt.opts)
			}
			if tt.name == "qcow2-compressed" {
				args = append(args, "-c")
			}
			run(t, "qemu-img", append(args, base, src)...)

			dst := filepath.Join(t.TempDir(), "images", "disk.qcow2")
			res, err := Import(context.Background(), src, dst, api.ImageDisk, nil)
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if res.SourceFormat != tt.format || res.Format != "qcow2" {
				t.Errorf("formats %s -> %s, want %s -> qcow2", res.SourceFormat, res.Format, tt.format)
			}
			if res.VirtualSizeBytes != baseSize {
				t.Errorf("VirtualSizeBytes = %d, want %d", res.VirtualSizeBytes, baseSize)
			}
			fi, err := os.Stat(dst)
			if err != nil {
				t.Fatal(err)
			}
			if res.SizeBytes != fi.Size() {
				t.Errorf("SizeBytes = %d, file has %d", res.SizeBytes, fi.Size())
			}
			if got := sha256File(t, dst); res.SHA256 != got {
				t.Errorf("SHA256 = %s, file has %s", res.SHA256, got)
			}
			run(t, "qemu-img", "compare", "-f", tt.format, "-F", "qcow2", src, dst)
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", base, dst)
			if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 1 {
				t.Errorf("image directory holds %d entries, want 1", len(entries))
			}
		})
	}
	// Every call named the format, and read with -U.
	if len(calls()) < 3*len(tests) {
		t.Fatalf("the wrapper recorded only %d qemu-img calls", len(calls()))
	}
	for _, c := range calls() {
		if !strings.Contains(c, " -f ") {
			t.Errorf("qemu-img called without -f: %s", c)
		}
		if (strings.HasPrefix(c, "info") || strings.HasPrefix(c, "convert")) && !strings.Contains(c, " -U") {
			t.Errorf("qemu-img called without -U: %s", c)
		}
	}
}

func TestImportProgress(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := baseRaw(t, dir, 64<<20)
	var got []int
	_, err := Import(context.Background(), src, filepath.Join(dir, "out", "d.qcow2"), api.ImageDisk, func(pct int) {
		got = append(got, pct)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 || got[len(got)-1] != 100 {
		t.Fatalf("progress = %v, want several calls ending at 100", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("progress not increasing: %v", got)
		}
	}
	t.Logf("progress: %v", got)
}

func TestImportCancelled(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := baseRaw(t, dir, 64<<20)
	dst := filepath.Join(dir, "out", "d.qcow2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Import(ctx, src, dst, api.ImageDisk, func(int) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Import = %v, want context.Canceled", err)
	}
	if IsReject(err) {
		t.Fatal("a cancellation is not the user's fault")
	}
	assertNothingLeft(t, dst)
}

func TestImportKeepsExistingDst(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := baseRaw(t, dir, 1<<20)
	dst := filepath.Join(dir, "existing")
	if err := os.WriteFile(dst, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{api.ImageDisk, api.ImageKernel} {
		if _, err := Import(context.Background(), src, dst, kind, nil); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("%s: Import over an existing dst: %v", kind, err)
		}
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Fatal("existing dst changed")
	}
}

func TestImportVerbatim(t *testing.T) {
	calls := recordQemuImg(t)
	dir := t.TempDir()
	// Odd-sized bytes that start like a qcow2 naming a backing file: a
	// kernel is never interpreted.
	data := append([]byte("QFI\xfb\x00\x00\x00\x03"), bytes.Repeat([]byte("vmlinuz"), 40000)...)
	src := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	for _, kind := range []string{api.ImageKernel, api.ImageInitrd} {
		dst := filepath.Join(dir, "store", kind)
		var last int
		res, err := Import(context.Background(), src, dst, kind, func(p int) { last = p })
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: stored bytes differ", kind)
		}
		want := Result{SourceFormat: "raw", Format: "raw", SizeBytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		if res != want {
			t.Fatalf("%s: Result = %+v, want %+v", kind, res, want)
		}
		if last != 100 {
			t.Fatalf("%s: last progress %d", kind, last)
		}
	}
	if c := calls(); len(c) != 0 {
		t.Fatalf("qemu-img ran for a kernel: %q", c)
	}

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	dst := filepath.Join(t.TempDir(), "k")
	if _, err := Import(context.Background(), empty, dst, api.ImageKernel, nil); !IsReject(err) {
		t.Fatalf("empty kernel: %v", err)
	}
	assertNothingLeft(t, dst)
}

func TestImportBadInput(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "x")
	os.WriteFile(src, make([]byte, 512), 0o644)
	dst := filepath.Join(t.TempDir(), "y")
	if _, err := Import(context.Background(), src, dst, "iso", nil); !IsReject(err) || !strings.Contains(err.Error(), `unknown image kind "iso"`) {
		t.Fatalf("unknown kind: %v", err)
	}
	_, err := Import(context.Background(), filepath.Join(dir, "missing"), dst, api.ImageDisk, nil)
	if err == nil || IsReject(err) {
		t.Fatalf("missing source: %v, want a server error", err)
	}
	if _, err := Import(context.Background(), dir, dst, api.ImageKernel, nil); err == nil {
		t.Fatal("directory source accepted")
	}
	assertNothingLeft(t, dst)
}

func TestImportMaxVirtualBytes(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "big.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", src, "1T") // a 192 KiB file
	dst := filepath.Join(t.TempDir(), "d.qcow2")
	_, err := Import(context.Background(), src, dst, api.ImageDisk, nil, WithMaxVirtualBytes(100<<30))
	if !IsReject(err) || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("Import of a 1 TiB disk with a 100 GiB limit: %v", err)
	}
	assertNothingLeft(t, dst)
	res, err := Import(context.Background(), src, dst, api.ImageDisk, nil, WithMaxVirtualBytes(1<<40))
	if err != nil || res.VirtualSizeBytes != 1<<40 {
		t.Fatalf("Import at the limit: %+v, %v", res, err)
	}
}
