package images

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

func TestImportRefuses(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	base := baseRaw(t, dir, 1<<20)
	path := func(name string) string { return filepath.Join(dir, name) }
	write := func(name string, b []byte) string {
		if err := os.WriteFile(path(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path(name)
	}
	garbage := make([]byte, 1000)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}

	tests := []struct {
		name  string
		make  func() string
		want  string
		noRun bool // refused before any qemu-img call
	}{
		{"qcow2 backing file", func() string {
			run(t, "qemu-img", "create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", path("b.qcow2"), "1M")
			return path("b.qcow2")
		}, `image names a backing file "/etc/passwd": refused`, true},
		{"qcow2 v2 backing file", func() string {
			run(t, "qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", "-b", base, "-F", "raw", path("b2.qcow2"))
			return path("b2.qcow2")
		}, fmt.Sprintf("image names a backing file %q: refused", base), true},
		{"qcow2 external data file", func() string {
			run(t, "qemu-img", "create", "-f", "qcow2", "-o", "data_file="+path("data.raw"), path("d.qcow2"), "1M")
			return path("d.qcow2")
		}, fmt.Sprintf("image names an external data file %q: refused", path("data.raw")), true},
		{"qcow2 data file bit without name", func() string {
			run(t, "qemu-img", "create", "-f", "qcow2", path("bit.qcow2"), "1M")
			b, _ := os.ReadFile(path("bit.qcow2"))
			b[79] |= 1 << 2 // incompatible features, bit 2
			return write("bit.qcow2", b)
		}, "image uses an external data file: refused", true},
		{"qcow2 encrypted", func() string {
			run(t, "qemu-img", "create", "-f", "qcow2", path("enc.qcow2"), "1M")
			b, _ := os.ReadFile(path("enc.qcow2"))
			binary.BigEndian.PutUint32(b[32:], 1)
			return write("enc.qcow2", b)
		}, "encrypted qcow2", true},
		{"qcow2 header garbage", func() string {
			return write("g.qcow2", append([]byte("QFI\xfb"), garbage...))
		}, "malformed qcow2 image", true},
		{"qcow2 truncated", func() string {
			return write("t.qcow2", []byte("QFI\xfb\x00\x00\x00\x03"))
		}, "header truncated", true},
		{"qcow2 broken tables", func() string {
			run(t, "qemu-img", "create", "-f", "qcow2", path("bt.qcow2"), "1M")
			b, _ := os.ReadFile(path("bt.qcow2"))
			binary.BigEndian.PutUint64(b[40:], 12345) // unaligned L1 table offset
			return write("bt.qcow2", b)
		}, "image is not a valid qcow2 image: ", false},
		{"vmdk parent", func() string {
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", base, path("parent.vmdk"))
			run(t, "qemu-img", "create", "-f", "vmdk", "-b", path("parent.vmdk"), "-F", "vmdk", path("child.vmdk"))
			return path("child.vmdk")
		}, fmt.Sprintf("image names a backing file %q: refused", path("parent.vmdk")), true},
		// QEMU reads the parent from 20 sectors at offset 512 whatever the
		// header says (found by FuzzInspect).
		{"vmdk parent with no descriptor offset", func() string {
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", base, path("p0.vmdk"))
			run(t, "qemu-img", "create", "-f", "vmdk", "-b", path("p0.vmdk"), "-F", "vmdk", path("c0.vmdk"))
			b, _ := os.ReadFile(path("c0.vmdk"))
			binary.LittleEndian.PutUint64(b[28:], 0)
			return write("c0.vmdk", b)
		}, fmt.Sprintf("image names a backing file %q: refused", path("p0.vmdk")), true},
		// QEMU finds the key as a substring, in a comment too.
		{"vmdk parent in a comment", func() string {
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", base, path("p1.vmdk"))
			run(t, "qemu-img", "create", "-f", "vmdk", "-b", path("p1.vmdk"), "-F", "vmdk", path("c1.vmdk"))
			b, _ := os.ReadFile(path("c1.vmdk"))
			i := bytes.Index(b, []byte("parentFileNameHint"))
			copy(b[i-2:], "# ")
			return write("c1.vmdk", b)
		}, fmt.Sprintf("image names a backing file %q: refused", path("p1.vmdk")), true},
		{"vmdk split extents", func() string {
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", path("split.vmdk"), "1M")
			return path("split.vmdk")
		}, "vmdk descriptor that references extent files: refused", true},
		{"vmdk flat extent", func() string {
			run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", path("flat.vmdk"), "1M")
			return path("flat.vmdk")
		}, "vmdk descriptor that references extent files: refused", true},
		{"vmdk embedded descriptor with capacity zero", func() string {
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", base, path("cap0.vmdk"))
			b, _ := os.ReadFile(path("cap0.vmdk"))
			binary.LittleEndian.PutUint64(b[12:], 0)
			return write("cap0.vmdk", b)
		}, "embedded descriptor references extent files: refused", true},
		{"differencing vhd", func() string {
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", base, path("diff.vhd"))
			b, _ := os.ReadFile(path("diff.vhd"))
			binary.BigEndian.PutUint32(b[60:], 4)
			binary.BigEndian.PutUint32(b[len(b)-512+60:], 4)
			return write("diff.vhd", b)
		}, "differencing vhd that names a parent disk: refused", true},
		{"qed", func() string {
			run(t, "qemu-img", "create", "-f", "qed", path("x.qed"), "1M")
			return path("x.qed")
		}, `unsupported image format "qed"`, true},
		{"parallels", func() string {
			run(t, "qemu-img", "create", "-f", "parallels", path("x.hdd"), "1M")
			return path("x.hdd")
		}, `unsupported image format "parallels"`, true},
		{"qcow version 1", func() string {
			run(t, "qemu-img", "create", "-f", "qcow", path("x.qcow"), "1M")
			return path("x.qcow")
		}, `unsupported image format "qcow"`, true},
		{"garbage", func() string { return write("garbage", garbage) },
			"not a recognised disk image", true},
		{"empty", func() string { return write("empty", nil) }, "image is empty", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.make()
			calls := recordQemuImg(t)
			dst := filepath.Join(t.TempDir(), "disk.qcow2")
			_, err := Import(context.Background(), src, dst, api.ImageDisk, nil)
			if err == nil {
				t.Fatal("Import accepted the image")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if !IsReject(err) {
				t.Fatalf("error %v (%T) is not a *RejectError", err, err)
			}
			if strings.Contains(err.Error(), src) {
				t.Errorf("error shows the server's path %s", src)
			}
			if c := calls(); tt.noRun && len(c) != 0 {
				t.Fatalf("qemu-img ran before the refusal: %q", c)
			}
			assertNothingLeft(t, dst)
		})
	}
}

// TestImportBackingNeverOpened proves the refusal of a backing file comes
// before qemu-img could open it: the backing file is a FIFO, on which any
// open for reading would block, and the wrapper logs no call at all.
func TestImportBackingNeverOpened(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "evil.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", src, "1M")
	// Point the header at a FIFO instead (same length name keeps offsets).
	fifo := filepath.Join(dir, "fifo")
	b, _ := os.ReadFile(src)
	off := binary.BigEndian.Uint64(b[8:])
	copy(b[off:], fifo)
	binary.BigEndian.PutUint32(b[16:], uint32(len(fifo)))
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("mkfifo", fifo).Run(); err != nil {
		peer.Missing(t, "mkfifo (coreutils) cannot make a FIFO here: %v", err)
	}
	calls := recordQemuImg(t)
	dst := filepath.Join(t.TempDir(), "disk.qcow2")
	_, err := Import(context.Background(), src, dst, api.ImageDisk, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("image names a backing file %q: refused", fifo)) {
		t.Fatalf("Import: %v", err)
	}
	if c := calls(); len(c) != 0 {
		t.Fatalf("qemu-img ran: %q", c)
	}
}

func TestCheckInfo(t *testing.T) {
	info := func(mod func(*imageInfo)) *imageInfo {
		i := &imageInfo{Format: "vmdk", VirtualSize: 1 << 20}
		i.FormatSpecific.Data.Extents = []struct {
			Filename string `json:"filename"`
		}{{Filename: "/src.vmdk"}}
		if mod != nil {
			mod(i)
		}
		return i
	}
	if err := checkInfo("vmdk", "/src.vmdk", info(nil)); err != nil {
		t.Fatalf("good info refused: %v", err)
	}
	for name, mod := range map[string]func(*imageInfo){
		"format":       func(i *imageInfo) { i.Format = "raw" },
		"backing":      func(i *imageInfo) { i.BackingFilename = "/etc/passwd" },
		"data file":    func(i *imageInfo) { i.FormatSpecific.Data.DataFile = "/dev/sda" },
		"other extent": func(i *imageInfo) { i.FormatSpecific.Data.Extents[0].Filename = "/other" },
		"two extents": func(i *imageInfo) {
			i.FormatSpecific.Data.Extents = append(i.FormatSpecific.Data.Extents, i.FormatSpecific.Data.Extents[0])
		},
		"no size": func(i *imageInfo) { i.VirtualSize = 0 },
	} {
		if err := checkInfo("vmdk", "/src.vmdk", info(mod)); !IsReject(err) {
			t.Errorf("%s: checkInfo = %v, want a refusal", name, err)
		}
	}
}

func TestDetectRawAlignment(t *testing.T) {
	dir := t.TempDir()
	aligned := filepath.Join(dir, "a")
	os.WriteFile(aligned, bytes.Repeat([]byte{0xa5}, 4096), 0o644)
	if f, err := detect(aligned); err != nil || f != FormatRaw {
		t.Fatalf("aligned bytes: %q, %v; want raw", f, err)
	}
	odd := filepath.Join(dir, "b")
	os.WriteFile(odd, bytes.Repeat([]byte{0xa5}, 4097), 0o644)
	if _, err := detect(odd); !IsReject(err) {
		t.Fatalf("odd-sized bytes: %v, want a refusal", err)
	}
}
