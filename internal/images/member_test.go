package images

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportMember: a streamOptimized VMDK held in the middle of a larger
// file (as in an OVA, between a header and another disk) is imported and
// compared in place: qemu-img is given only the member's json: name,
// never the file's path alone, and the copy is the disk the VMDK holds.
// A range that reaches past the file's end, or starts before it, or an
// empty one, is refused before qemu-img runs, and nothing is left at the destination.
func TestImportMember(t *testing.T) {
	calls := recordQemuImg(t)
	dir := t.TempDir()
	base := baseRaw(t, dir, baseSize)
	vmdk := filepath.Join(dir, "disk.vmdk")
	run(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", base, vmdk)
	disk, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "package.ova")
	head := []byte(strings.Repeat("h", 3*512))
	if err := os.WriteFile(pkg, append(append(append([]byte{}, head...), disk...), other...), 0o600); err != nil {
		t.Fatal(err)
	}
	m := Member{File: pkg, Offset: int64(len(head)), Size: int64(len(disk))}

	out := filepath.Join(t.TempDir(), "out.qcow2")
	res, err := ImportMember(context.Background(), m, out, nil, WithMaxVirtualBytes(1<<30))
	if err != nil {
		t.Fatal(err)
	}
	if res.SourceFormat != FormatVMDK || res.VirtualSizeBytes != baseSize {
		t.Fatalf("result %+v", res)
	}
	if err := CompareMember(context.Background(), FormatVMDK, m, FormatQCOW2, out); err != nil {
		t.Fatalf("the member against its copy: %v", err)
	}
	run(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", base, out)
	for _, c := range calls() {
		if strings.HasSuffix(c, " "+pkg) || !strings.Contains(c, "json:") && strings.Contains(c, pkg) {
			t.Errorf("qemu-img was given the package itself: %s", c)
		}
	}

	n := len(calls())
	for _, bad := range []Member{
		{File: pkg, Offset: m.Offset, Size: m.Size + int64(len(other)) + 1}, // one byte past the end
		{File: pkg, Offset: -512, Size: m.Size},
		{File: pkg, Offset: 1 << 62, Size: 1 << 62}, // overflows
		{File: pkg, Offset: m.Offset, Size: -1},
	} {
		dst := filepath.Join(t.TempDir(), "out.qcow2")
		_, err := ImportMember(context.Background(), bad, dst, nil)
		if !IsReject(err) || !strings.Contains(err.Error(), "not within its") {
			t.Errorf("member %+v: %v, want a refusal of its range", bad, err)
		}
		if err := CompareMember(context.Background(), FormatVMDK, bad, FormatQCOW2, out); !IsReject(err) {
			t.Errorf("compare of member %+v: %v, want a refusal of its range", bad, err)
		}
		assertNothingLeft(t, dst)
	}
	if _, err := ImportMember(context.Background(), Member{File: pkg, Offset: m.Offset}, filepath.Join(t.TempDir(), "out.qcow2"), nil); !IsReject(err) || err.Error() != "image is empty" {
		t.Errorf("an empty member: %v", err)
	}
	if got := calls()[n:]; len(got) != 0 {
		t.Errorf("qemu-img ran on a range outside its file: %v", got)
	}
}

// TestImportMemberNamingAFile: a member that is a VMDK descriptor naming
// a file of the host is refused by the checks Import makes of a file.
func TestImportMemberNamingAFile(t *testing.T) {
	needQemuImg(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.raw")
	if err := os.WriteFile(secret, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"" + secret + "\" 0\n"
	pkg := filepath.Join(dir, "package.ova")
	if err := os.WriteFile(pkg, append(make([]byte, 512), desc...), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out.qcow2")
	_, err := ImportMember(context.Background(), Member{File: pkg, Offset: 512, Size: int64(len(desc))}, dst, nil)
	if !IsReject(err) || !strings.Contains(err.Error(), "references extent files") {
		t.Fatalf("import: %v", err)
	}
	assertNothingLeft(t, dst)
}

// TestMemberOwnExtent: a VMDK member's one extent is itself only when
// qemu-img names exactly its range of its file.
func TestMemberOwnExtent(t *testing.T) {
	s := diskSource{path: "/data/x.ova", member: &Member{File: "/data/x.ova", Offset: 512, Size: 4096}}
	own := `json:{"offset": 512, "driver": "raw", "size": 4096, "file": {"driver": "file", "filename": "/data/x.ova"}}`
	if !s.ownExtent(own) {
		t.Errorf("its own range, as qemu-img names it, is not its own")
	}
	if !strings.HasPrefix(s.arg("vmdk"), `json:{"driver":"vmdk","file":{"driver":"raw","offset":512,"size":4096,"file":{"driver":"file","filename":"/data/x.ova"}}}`) {
		t.Errorf("json name %s", s.arg("vmdk"))
	}
	for _, name := range []string{
		"/data/x.ova",
		`json:{"offset": 0, "driver": "raw", "size": 4096, "file": {"driver": "file", "filename": "/data/x.ova"}}`,
		`json:{"offset": 512, "driver": "raw", "size": 8192, "file": {"driver": "file", "filename": "/data/x.ova"}}`,
		`json:{"offset": 512, "driver": "raw", "size": 4096, "file": {"driver": "file", "filename": "/etc/shadow"}}`,
		`json:{"offset": 512, "driver": "raw", "size": 4096, "file": {"driver": "nbd", "filename": "/data/x.ova"}}`,
		`json:{"offset": 512, "driver": "raw", "size": 4096, "file": {"driver": "file", "filename": "/data/x.ova", "x": 1}}`,
		`json:{"offset": 512, "driver": "qcow2", "size": 4096, "file": {"driver": "file", "filename": "/data/x.ova"}}`,
		own + `{}`,
	} {
		if s.ownExtent(name) {
			t.Errorf("%s is taken for the member's own range", name)
		}
	}
}

// A member's file whose path is not valid UTF-8 is refused: qemu-img's
// json: name would carry U+FFFD for the bad bytes and open another file
// than the one checked (here a twin beside it, of other contents).
func TestMemberPathNotUTF8(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "a\xff.ova")
	twin := filepath.Join(dir, "a\uFFFD.ova")
	for _, f := range []struct {
		path string
		b    byte
	}{{bad, 'A'}, {twin, 'B'}} {
		if err := os.WriteFile(f.path, []byte(strings.Repeat(string(f.b), 1<<20)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := Member{File: bad, Offset: 0, Size: 1 << 20}
	out := filepath.Join(t.TempDir(), "out.qcow2")
	if _, err := ImportMember(context.Background(), m, out, nil, WithMaxVirtualBytes(1<<30)); err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Fatalf("import of a member of %q: %v, want refused", bad, err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("an image was written")
	}
	if err := CompareMember(context.Background(), FormatRaw, m, FormatQCOW2, out); err == nil {
		t.Fatal("compare of a member of a non-UTF-8 path passed")
	}
}
