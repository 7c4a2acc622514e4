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
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// ovaEnvelope is a VMware-style OVF envelope of one VM with one
// streamOptimized disk of capacity bytes and one vmxnet3 NIC.
func ovaEnvelope(name, href string, capacity int64, mac string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:id="file1" ovf:href="` + href + `"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="` + fmt.Sprint(capacity) + `" ovf:capacityAllocationUnits="byte"
    ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <NetworkSection><Info>networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="` + name + `"><Info>vm</Info><Name>` + name + `</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
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
// disk as a streamOptimized VMDK) into the server's host: `migration
// plan` uploads the OVA to the server, which plans it (its hardware read
// from the envelope); `migration run` starts it and follows it while the
// server copies, imports and creates it. The VM boots from its disk
// through SeaBIOS, its marker appears, its hardware and MAC are the
// envelope's, the migration is recorded as succeeded and its job
// directory (the upload, the copy) is gone.
func TestMigrationFromOVA(t *testing.T) {
	requireQEMU(t)
	s := startServer(t, t.TempDir())
	c := s.adminClient(t)
	dir := t.TempDir()
	ova, mac := makeOVA(t, dir)
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
	out1 := cli("migration", "plan", "--name", "ova1", "--from-ova", ova, "--to-host", "local", "--network-map", "VM Network=user")
	// Without virt-v2v-in-place the guest keeps its drivers and gets SATA.
	bus := "scsi bus → SATA (AHCI)"
	if _, err := exec.LookPath("virt-v2v-in-place"); err == nil {
		bus = "scsi bus → virtio-blk"
	}
	if !strings.Contains(out1, "app-server") || !strings.Contains(out1, "planned") || !strings.Contains(out1, bus) {
		t.Fatalf("plan output:\n%s", out1)
	}
	m, err := c.GetVMMigration(context.Background(), "ova1")
	if err != nil || m.Status.State != api.VMMigrationPlanned || len(m.Status.VMs) != 1 || m.Status.VMs[0].Plan == nil ||
		m.Status.VMs[0].Plan.NICs[0].MAC != mac || len(m.Status.VMs[0].Plan.Blockers) != 0 {
		t.Fatalf("planned migration %+v %v", m, err)
	}
	if _, err := c.GetVM(context.Background(), "app-server"); err == nil {
		t.Fatal("a plan made the VM")
	}
	t0 := time.Now()
	out2 := cli("migration", "run", "ova1")
	if !strings.Contains(out2, "succeeded") {
		t.Fatalf("run output:\n%s", out2)
	}
	t.Logf("migration run:\n%s", out2)
	waitConsole(t, c, "app-server", marker, 1)
	t.Logf("from 'migration run' to the guest's marker: %v", time.Since(t0).Round(time.Millisecond))
	vm, err := c.GetVM(context.Background(), "app-server")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.VCPUs != 1 || vm.Spec.MemoryMiB != 256 || len(vm.Spec.NICs) != 1 || vm.Spec.NICs[0].MAC != mac || vm.Spec.Host != "local" {
		t.Fatalf("VM spec %+v", vm.Spec)
	}
	// The test guest is not converted (without virt-v2v-in-place, or
	// because it finds no OS it knows on the disk): compatible devices.
	if vm.Spec.Disks[0].Bus != api.DiskBusSATA || vm.Spec.NICs[0].Model != api.NICModelE1000 {
		t.Errorf("VM devices %+v %+v, want sata and e1000", vm.Spec.Disks, vm.Spec.NICs)
	}
	m, err = c.GetVMMigration(context.Background(), "ova1")
	if err != nil || m.Status.State != api.VMMigrationSucceeded || m.Status.VMs[0].State != api.VMMigrationSucceeded || m.Status.VMs[0].Host != "local" {
		t.Fatalf("migration record %+v %v", m, err)
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "migrations", m.UID)); !os.IsNotExist(err) {
		t.Errorf("the job directory of the finished migration: %v", err)
	}
	list := cli("migration", "list")
	if !strings.Contains(list, "ova1") || !strings.Contains(list, "succeeded") {
		t.Errorf("migration list:\n%s", list)
	}
}

// makeOVA packages the test guest's disk as an OVA in dir; it returns
// the package and its NIC's MAC.
func makeOVA(t *testing.T, dir string) (string, string) {
	t.Helper()
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
	if err := os.WriteFile(ova, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return ova, mac
}
