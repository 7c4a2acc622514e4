package server

import (
	"archive/tar"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// tinyOVA is an OVA of one VM (2 vCPUs, 256 MiB, one 64 MiB disk, one NIC
// on "VM Network").
func tinyOVA(t *testing.T) []byte {
	t.Helper()
	env := `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="file1" ovf:href="disk1.vmdk"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="67108864" ovf:capacityAllocationUnits="byte"/></DiskSection>
  <VirtualSystem ovf:id="Web One"><Info>vm</Info><Name>Web One</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:12:34:56</rasd:Address><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>nic</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range []struct {
		name string
		body []byte
	}{{"web.ovf", []byte(env)}, {"disk1.vmdk", make([]byte, 512)}} {
		tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.body))})
		tw.Write(m.body)
	}
	tw.Close()
	return buf.Bytes()
}

// TestVMMigrationFromURL: an OVA URL is fetched by the leading server
// under the image import's rules: a loopback address is refused (the
// migration fails saying so, nothing was fetched) until a superadmin
// allows it; then the package is fetched into the migration's directory
// and planned from its envelope. A deleted migration's directory is
// swept.
func TestVMMigrationFromURL(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	ova := tinyOVA(t)
	var hits atomic.Int64
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(ova)
	}))
	defer web.Close()
	member := e.as(api.RoleMember, "pa")
	req := api.VMMigrationCreate{Name: "url1", NetworkMap: map[string]string{"*": "user"},
		Source: api.VMMigrationSource{Kind: api.MigrationSourceURL, URL: web.URL + "/web.ova"}}
	if _, err := member.CreateVMMigration(ctx, req); err != nil {
		t.Fatal(err)
	}
	ended := func(m *api.VMMigration) bool {
		return m.Status.State != api.VMMigrationPlanning
	}
	m, err := member.WaitVMMigration(ctx, "url1", 50*time.Millisecond, ended, nil)
	if err != nil || m.Status.State != api.VMMigrationFailed || !strings.Contains(m.Status.Error, "fetching the OVA") || hits.Load() != 0 {
		t.Fatalf("a loopback URL not allowed: %+v %v, %d requests served", m.Status, err, hits.Load())
	}
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}}); err != nil {
		t.Fatal(err)
	}
	req.Name = "url2"
	if _, err := member.CreateVMMigration(ctx, req); err != nil {
		t.Fatal(err)
	}
	m, err = member.WaitVMMigration(ctx, "url2", 50*time.Millisecond, ended, nil)
	if err != nil || m.Status.State != api.VMMigrationPlanned || len(m.Status.VMs) != 1 {
		t.Fatalf("an allowed URL: %+v %v", m, err)
	}
	v := m.Status.VMs[0]
	if v.Name != "web-one" || v.Plan.VCPUs != 2 || v.Plan.MemoryMiB != 256 || v.Plan.NICs[0].MAC != "00:50:56:12:34:56" || v.Plan.NICs[0].Network != "user" || hits.Load() != 1 {
		t.Fatalf("the plan %+v %+v, %d fetches", v, v.Plan, hits.Load())
	}
	dir := filepath.Join(MigrationDir(e.dataDir), m.UID)
	if _, err := os.Stat(filepath.Join(dir, "files", "source.ova")); err != nil {
		t.Fatalf("the fetched package: %v", err)
	}
	if err := member.DeleteVMMigration(ctx, "url2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted migration's directory is still there")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
