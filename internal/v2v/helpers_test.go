package v2v

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// envelope is an OVF envelope of one VM with one disk, as VMware writes
// them; href, capacity and units fill the disk's reference.
func envelope(name, href, capacity, units, firmware, mac string) string {
	fw := ""
	if firmware != "" {
		fw = `<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="` + firmware + `"/>`
	}
	return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:id="file1" ovf:href="` + href + `"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="` + capacity + `" ovf:capacityAllocationUnits="` + units + `"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>networks</Info><Network ovf:name="VM Network"><Description>lan</Description></Network></NetworkSection>
  <VirtualSystem ovf:id="` + name + `">
    <Info>a VM</Info><Name>` + name + `</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest"><Info>os</Info><Description>Debian</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>hardware</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>2 vCPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>256 MB</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>` + mac + `</rasd:Address><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      ` + fw + `
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`
}

// tarMember is one member of a test OVA.
type tarMember struct {
	name string
	body []byte
	file string // read from this file when set
	typ  byte
	link string
}

// writeOVA writes the members as a tar at path.
func writeOVA(t testing.TB, path string, members ...tarMember) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, m := range members {
		body := m.body
		if m.file != "" {
			if body, err = os.ReadFile(m.file); err != nil {
				t.Fatal(err)
			}
		}
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(body)), Typeflag: typ, Linkname: m.link}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// convertGuest converts the test guest's boot disk to format (with -o
// options) at dst.
func convertGuest(t testing.TB, p guest.Paths, format, opts, dst string) {
	t.Helper()
	args := []string{"convert", "-q", "-f", "qcow2", "-O", format}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	if out, err := exec.Command("qemu-img", append(args, p.Boot, dst)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert to %s: %v: %s", format, err, out)
	}
}

// virtualSize is qemu-img's virtual size of a qcow2.
func virtualSize(t testing.TB, format, path string) int64 {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-f", format, "--output=json", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if i := bytes.Index(out, []byte(`"virtual-size": `)); i >= 0 {
		fmt.Sscan(string(out[i+len(`"virtual-size": `):]), &n)
	}
	return n
}

// bootDisk boots the qcow2 at disk through SeaBIOS from a virtio-blk
// disk, as a Polyvisor VM has it, and waits for the guest's marker on its
// serial console.
func bootDisk(t *testing.T, disk string, vcpus int, memMiB int64) {
	t.Helper()
	took := guest.BootToMarker(t, "-machine", "q35", "-m", fmt.Sprint(memMiB), "-smp", fmt.Sprint(vcpus),
		"-blockdev", "driver=qcow2,node-name=d0,file.driver=file,file.filename="+disk,
		"-device", "virtio-blk-pci,drive=d0,bootindex=1")
	t.Logf("migrated guest's marker %v after starting qemu", took.Round(10*time.Millisecond))
}

// listFiles lists every file under dir, relative.
func listFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			r, _ := filepath.Rel(dir, p)
			out = append(out, r)
		}
		return nil
	})
	return out
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func strconvItoa(n int64) string { return fmt.Sprint(n) }
