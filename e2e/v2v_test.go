package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// ovaEnvelope is a VMware-style OVF envelope of one VM with one
// streamOptimized disk of capacity bytes and one vmxnet3 NIC.
func ovaEnvelope(name, href string, capacity int64, mac string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:id="file1" ovf:href="` + href + `"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="` + fmt.Sprint(capacity) + `" ovf:capacityAllocationUnits="byte"
    ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <NetworkSection><Info>networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="` + name + `"><Info>vm</Info><Name>` + name + `</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>1 vCPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>SCSI</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>` + mac + `</rasd:Address><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>nic</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`
}

// TestMigrationFromOVA moves a VM packaged as an OVA (the test guest's
// disk as a streamOptimized VMDK) into the server's host with the CLI:
// `migration plan` reads its hardware, `migration run` copies, imports
// and creates it; the VM boots from its disk through SeaBIOS, its marker
// appears, its hardware and MAC are the envelope's, and the migration is
// recorded as succeeded.
func TestMigrationFromOVA(t *testing.T) {
	requireQEMU(t)
	s := startServer(t, t.TempDir())
	c := s.adminClient(t)
	dir := t.TempDir()
	boot := filepath.Join(guestDir, "boot.qcow2")
	vmdk := filepath.Join(dir, "disk1.vmdk")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", boot, vmdk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", "-f", "qcow2", boot).Output()
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	json.Unmarshal(out, &info)
	const mac = "00:50:56:12:34:56"
	ova := filepath.Join(dir, "app.ova")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	disk, _ := os.ReadFile(vmdk)
	for _, m := range []struct {
		name string
		body []byte
	}{{"app.ovf", []byte(ovaEnvelope("App Server", "disk1.vmdk", info.VirtualSize, mac))}, {"disk1.vmdk", disk}} {
		tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.body))})
		tw.Write(m.body)
	}
	tw.Close()
	os.WriteFile(ova, buf.Bytes(), 0o600)

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"--server", "unix://" + s.socket}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("polyvisor %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	plan := filepath.Join(dir, "plan.json")
	out1 := cli("migration", "plan", "--from-ova", ova, "--to-host", "local", "--network-map", "VM Network=user", "--plan-file", plan,
		"--job-dir", filepath.Join(dir, "job"))
	if !strings.Contains(out1, "app-server") || !strings.Contains(out1, "ready") || !strings.Contains(out1, "scsi bus → virtio-blk") {
		t.Fatalf("plan output:\n%s", out1)
	}
	out2 := cli("migration", "run", plan, "--name", "ova1", "--job-dir", filepath.Join(dir, "job"))
	if !strings.Contains(out2, "succeeded") {
		t.Fatalf("run output:\n%s", out2)
	}
	t.Logf("migration run:\n%s", out2)

	waitConsole(t, c, "app-server", marker, 1)
	vm, err := c.GetVM(context.Background(), "app-server")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.VCPUs != 1 || vm.Spec.MemoryMiB != 256 || len(vm.Spec.NICs) != 1 || vm.Spec.NICs[0].MAC != mac || vm.Spec.Host != "local" {
		t.Fatalf("VM spec %+v", vm.Spec)
	}
	m, err := c.GetVMMigration(context.Background(), "ova1")
	if err != nil || m.Status.State != api.VMMigrationSucceeded || m.Status.VMs[0].State != api.VMMigrationSucceeded {
		t.Fatalf("migration record %+v %v", m, err)
	}
	// The plan run again (a run that resumes after its end): the copy,
	// the image and the VM are the ones already made, kept as they are.
	out3 := cli("migration", "run", plan, "--name", "ova2", "--job-dir", filepath.Join(dir, "job"))
	if !strings.Contains(out3, "succeeded") || strings.Contains(out3, "extract") {
		t.Fatalf("second run:\n%s", out3)
	}
	if again, err := c.GetVM(context.Background(), "app-server"); err != nil || again.UID != vm.UID {
		t.Fatalf("the VM after the second run: %+v %v", again, err)
	}
	list := cli("migration", "list")
	if !strings.Contains(list, "ova1") || !strings.Contains(list, "succeeded") {
		t.Errorf("migration list:\n%s", list)
	}
}
