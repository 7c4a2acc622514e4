package v2v

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileOVAs: packages that try to make the copy read or write
// files outside them, or declare absurd disks, are refused with an error
// that names the problem, and nothing is written outside the job
// directory (nor in it).
func TestHostileOVAs(t *testing.T) {
	raw := make([]byte, 1<<20) // a valid raw disk
	for _, tc := range []struct {
		name    string
		members []tarMember
		want    string
	}{
		{"href outside the package", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "../../etc/passwd", "1", "byte * 2^20", "", ""))},
		}, "points outside the package"},
		{"href at a URL", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "https://attacker.example/disk.vmdk", "1", "byte * 2^20", "", ""))},
		}, "is a URL"},
		{"href absolute", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "/etc/shadow", "1", "byte * 2^20", "", ""))},
		}, "absolute path"},
		{"member path traversal", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "disk.img", "1", "byte * 2^20", "", ""))},
			{name: "../../tmp/evil", body: raw},
			{name: "disk.img", body: raw},
		}, "path traversal"},
		{"member symlink", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "disk.img", "1", "byte * 2^20", "", ""))},
			{name: "disk.img", typ: tar.TypeSymlink, link: "/etc/passwd"},
		}, "not a regular file"},
		{"1 EiB disk", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "disk.img", "1", "byte * 2^60", "", ""))},
			{name: "disk.img", body: raw},
		}, "over the limit"},
		{"overflowing capacity", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "disk.img", "99999999999999999999", "byte * 2^60", "", ""))},
			{name: "disk.img", body: raw},
		}, "over the limit"},
		{"missing member", []tarMember{
			{name: "vm.ovf", body: []byte(envelope("vm", "disk.img", "1", "byte * 2^20", "", ""))},
		}, "does not hold"},
		{"no envelope", []tarMember{{name: "disk.img", body: raw}}, "no OVF envelope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ova := filepath.Join(dir, "x.ova")
			writeOVA(t, ova, tc.members...)
			_, err := ReadOVA(ova, DefaultMaxDiskBytes)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadOVA: %v, want an error saying %q", err, tc.want)
			}
			if got := listFiles(t, dir); len(got) != 1 {
				t.Errorf("files written: %v", got)
			}
		})
	}
}

// TestHostileDisks: a disk that names a file of the host (a VMDK
// descriptor naming an extent, a VMDK naming a parent, a qcow2 with a
// backing file) is refused by the image import checks before qemu-img
// opens it, and the job directory keeps nothing of it.
func TestHostileDisks(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "host-secret.raw")
	if err := os.WriteFile(secret, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	descriptor := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n" +
		"RW 2048 FLAT \"" + secret + "\" 0\n\nddb.virtualHWVersion = \"4\"\n"
	sparse := make([]byte, 64<<10)
	copy(sparse, "KDMV")
	sparse[4] = 1
	copy(sparse[512:], "# Disk DescriptorFile\nparentFileNameHint=\""+secret+"\"\n")
	qcow := filepath.Join(dir, "backed.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", qcow)

	for _, tc := range []struct {
		name, file string
		body       []byte
		want       string
	}{
		{"vmdk descriptor naming a host file", "desc.vmdk", []byte(descriptor), "references extent files"},
		{"vmdk naming a parent", "parent.vmdk", sparse, "names a backing file"},
		{"qcow2 with a backing file", "", nil, "names a backing file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := qcow
			if tc.file != "" {
				path = filepath.Join(dir, tc.file)
				if err := os.WriteFile(path, tc.body, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			job := filepath.Join(t.TempDir(), "job")
			hw := Hardware{Name: "bad", VCPUs: 1, MemoryMiB: 64, Disks: []Disk{{Name: "d", Bus: BusVirtio, Source: DiskSource{Kind: SourceFile, Path: path}}}}
			_, err := (&Copier{Dir: job}).CopyVM(context.Background(), PlanVM(hw, Options{Host: "h"}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("copy: %v, want an error saying %q", err, tc.want)
			}
			if got := listFiles(t, job); len(got) != 0 {
				t.Errorf("job directory keeps %v", got)
			}
		})
	}
	// Inside an OVA too: the member, read in place, is refused, and the
	// job directory keeps nothing.
	ovaDir := t.TempDir()
	ova := filepath.Join(ovaDir, "x.ova")
	writeOVA(t, ova, tarMember{name: "vm.ovf", body: []byte(envelope("vm", "disk.vmdk", "1", "byte * 2^20", "", ""))},
		tarMember{name: "disk.vmdk", body: []byte(descriptor)})
	hw, err := ReadOVA(ova, DefaultMaxDiskBytes)
	if err != nil {
		t.Fatal(err)
	}
	job := filepath.Join(ovaDir, "job")
	_, err = (&Copier{Dir: job}).CopyVM(context.Background(), PlanVM(hw, Options{Host: "h", NetworkMap: map[string]string{"*": "user"}}))
	if err == nil || !strings.Contains(err.Error(), "references extent files") {
		t.Fatalf("copy of the OVA: %v", err)
	}
	if got := listFiles(t, job); len(got) != 0 {
		t.Errorf("job directory keeps %v of the refused OVA member", got)
	}
}

// TestOVFFileDiskOutsideItsDirectory: an unpacked OVF whose disk is a
// symbolic link out of the envelope's directory is refused.
func TestOVFFileDiskOutsideItsDirectory(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(dir, "pkg")
	os.Mkdir(pkg, 0o700)
	os.WriteFile(filepath.Join(dir, "outside.img"), make([]byte, 1<<20), 0o600)
	os.Symlink(filepath.Join(dir, "outside.img"), filepath.Join(pkg, "disk.img"))
	ovf := filepath.Join(pkg, "vm.ovf")
	os.WriteFile(ovf, []byte(envelope("vm", "disk.img", "1", "byte * 2^20", "", "")), 0o600)
	if _, err := ReadOVFFile(ovf, DefaultMaxDiskBytes); err == nil || !strings.Contains(err.Error(), "outside the envelope's directory") {
		t.Fatalf("ReadOVFFile: %v", err)
	}
	os.Remove(filepath.Join(pkg, "disk.img"))
	os.WriteFile(filepath.Join(pkg, "disk.img"), make([]byte, 1<<20), 0o600)
	hw, err := ReadOVFFile(ovf, DefaultMaxDiskBytes)
	if err != nil {
		t.Fatal(err)
	}
	if s := hw.Disks[0].Source; s.Kind != SourceFile || !strings.HasSuffix(s.Path, "/pkg/disk.img") {
		t.Fatalf("disk source %+v", s)
	}
}

// TestOVAMemberPastItsEnd: a member whose declared bytes reach past the
// end of the package is refused when the package is read, and when it
// is copied (the package cut after it was planned), with nothing written
// in the job directory nor to the package.
func TestOVAMemberPastItsEnd(t *testing.T) {
	raw := make([]byte, 1<<20)
	copy(raw, "a disk of the package")
	members := []tarMember{{name: "vm.ovf", body: []byte(envelope("vm", "disk.img", "1", "byte * 2^20", "", ""))}, {name: "disk.img", body: raw}}

	// A header that declares 3 GiB of a member the package holds 1 MiB of.
	dir := t.TempDir()
	big := filepath.Join(dir, "big.ova")
	writeOVA(t, big, members...)
	setMemberSize(t, big, "disk.img", 3<<30)
	if _, err := ReadOVA(big, DefaultMaxDiskBytes); err == nil || !strings.Contains(err.Error(), `member "disk.img" declares 3221225472 bytes at offset`) ||
		!strings.Contains(err.Error(), "past the end of the") {
		t.Fatalf("ReadOVA: %v, want a refusal of the member's range", err)
	}

	// Planned whole, then cut inside the disk before it is copied.
	ova := filepath.Join(dir, "x.ova")
	writeOVA(t, ova, members...)
	hw, err := ReadOVA(ova, DefaultMaxDiskBytes)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(ova)
	if err != nil {
		t.Fatal(err)
	}
	cut := fi.Size() - 512<<10
	if err := os.Truncate(ova, cut); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadOVA(ova, DefaultMaxDiskBytes); err == nil || !strings.Contains(err.Error(), "past the end of the") {
		t.Fatalf("ReadOVA of the cut package: %v", err)
	}
	job := filepath.Join(dir, "job")
	_, err = (&Copier{Dir: job}).CopyVM(context.Background(), PlanVM(hw, Options{Host: "h", NetworkMap: map[string]string{"*": "user"}}))
	if err == nil || !strings.Contains(err.Error(), `member "disk.img" declares 1048576 bytes at offset`) {
		t.Fatalf("copy of the cut package: %v, want a refusal of the member's range", err)
	}
	if got := listFiles(t, job); len(got) != 0 {
		t.Errorf("job directory keeps %v", got)
	}
	if fi, err := os.Stat(ova); err != nil || fi.Size() != cut {
		t.Errorf("the package after the copy: %v %v", fi, err)
	}
}

// setMemberSize rewrites the size in the tar header of member name of
// the package at path, and the header's checksum.
func setMemberSize(t *testing.T, path, name string, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off+512 <= len(b); off += 512 {
		h := b[off : off+512]
		if string(h[:len(name)+1]) != name+"\x00" {
			continue
		}
		copy(h[124:136], fmt.Sprintf("%011o\x00", size))
		copy(h[148:156], "        ")
		sum := 0
		for _, c := range h {
			sum += int(c)
		}
		copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no header of %s in %s", name, path)
}

// TestOVASparseMemberRefused: a member that tar stores sparse (GNU
// sparse 1.0 in a PAX header) has no one contiguous range in the package
// to be read in place: it is refused when the package is read.
func TestOVASparseMemberRefused(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	ovf := []byte(envelope("vm", "disk.img", "1", "byte * 2^20", "", ""))
	if err := tw.WriteHeader(&tar.Header{Name: "vm.ovf", Mode: 0o644, Size: int64(len(ovf))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(ovf); err != nil {
		t.Fatal(err)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	// tar.Writer does not write GNU sparse records: the PAX header is
	// made here. The member's data is its sparse map (one 512-byte
	// extent at 0) in a block of its own, then that extent.
	var pax []byte
	for _, kv := range []string{"GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name=disk.img", "GNU.sparse.realsize=1048576"} {
		// "LEN key=value\n", LEN counting its own digits.
		n := len(kv) + 2
		for d := 1; ; d++ {
			if len(fmt.Sprint(n+d)) == d {
				n += d
				break
			}
		}
		pax = append(pax, fmt.Sprintf("%d %s\n", n, kv)...)
	}
	body := make([]byte, 1024)
	copy(body, "1\n0\n512\n")
	b.Write(ustarHeader(t, "PaxHeaders/disk.img", 'x', len(pax)))
	b.Write(pax)
	b.Write(make([]byte, (512-len(pax)%512)%512))
	b.Write(ustarHeader(t, "disk.img", '0', len(body)))
	b.Write(body)
	b.Write(make([]byte, 1024))
	ova := filepath.Join(t.TempDir(), "x.ova")
	if err := os.WriteFile(ova, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadOVA(ova, DefaultMaxDiskBytes); err == nil || !strings.Contains(err.Error(), `member "disk.img" is a sparse tar member: refused`) {
		t.Fatalf("ReadOVA: %v, want the sparse member refused", err)
	}
}

// ustarHeader is a tar header block of a member of typ and size bytes.
func ustarHeader(t *testing.T, name string, typ byte, size int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	h := b.Bytes()[:512]
	h[156] = typ
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}
