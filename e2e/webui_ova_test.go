package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// webOVAName is the name the browser test's OVA gives its VM: markup, which
// the console must show as the text it is.
const webOVAName = `<img src=x onerror="document.title='injected'">Web & Co`

// webOVA packages the test guest's disk as an OVA (an OVF envelope and a
// streamOptimized VMDK) of one VM named webOVAName with one NIC on "VM
// Network", for the import wizard to upload, have planned and moved: the
// VM it makes boots to the guest's marker.
func webOVA(t *testing.T, dir string) string {
	t.Helper()
	boot := filepath.Join(guestDir, "boot.qcow2")
	vmdk := filepath.Join(dir, "web-ova.vmdk")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", boot, vmdk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", "-f", "qcow2", boot).Output()
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.VirtualSize <= 0 {
		t.Fatalf("qemu-img info of the guest's disk: %v: %s", err, out)
	}
	disk, err := os.ReadFile(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	escaped := `&lt;img src=x onerror=&quot;document.title='injected'&quot;&gt;Web &amp; Co`
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range []struct {
		name string
		body []byte
	}{{"web.ovf", []byte(ovaEnvelope(escaped, "disk1.vmdk", info.VirtualSize, "00:50:56:12:34:57"))}, {"disk1.vmdk", disk}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	ova := filepath.Join(dir, "web.ova")
	if err := os.WriteFile(ova, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return ova
}
