package v2v

import (
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func TestPlanVM(t *testing.T) {
	base := func() Hardware {
		return Hardware{Name: "DB_Server (prod)", VCPUs: 4, MemoryMiB: 4096, Firmware: FirmwareBIOS, GuestOS: "debian11_64Guest",
			Disks: []Disk{{Name: "Hard disk 1", Bus: BusSCSI, CapacityBytes: 10 << 30, Source: DiskSource{Kind: SourceFile, Format: "vmdk"}},
				{Name: "Hard disk 2", Bus: BusVirtio, CapacityBytes: 1 << 30, Source: DiskSource{Kind: SourceFile, Format: "qcow2"}}},
			NICs: []NIC{{Network: "VM Network", MAC: "00:50:56:AB:CD:EF", Model: "vmxnet3"}}}
	}
	opts := Options{Host: "h1", NetworkMap: map[string]string{"VM Network": "lan"}, RateBytesPerSecond: 1 << 30}
	p := PlanVM(base(), opts)
	if len(p.Blockers) > 0 {
		t.Fatalf("blockers %v", p.Blockers)
	}
	if p.Name != "db-server-prod" || p.VCPUs != 4 || p.MemoryMiB != 4096 || p.Host != "h1" {
		t.Errorf("plan %+v", p)
	}
	if p.Disks[0].Name != "root" || p.Disks[0].Image != "db-server-prod-root" || p.Disks[1].Name != "disk1" {
		t.Errorf("disks %+v", p.Disks)
	}
	// Without virt-v2v-in-place, the guest is not converted: its VM gets
	// devices it has drivers for.
	if n := p.NICs[0]; n.Network != "lan" || n.MAC != "00:50:56:ab:cd:ef" || n.Model != CompatibleNICModel {
		t.Errorf("nic %+v", n)
	}
	if p.Disks[0].Bus != CompatibleDiskBus || p.Disks[1].Bus != CompatibleDiskBus || p.Firmware != FirmwareBIOS {
		t.Errorf("disks %+v firmware %q", p.Disks, p.Firmware)
	}
	if p.CopyBytes != 11<<30 || p.EstimatedSeconds != 11 {
		t.Errorf("copy %d bytes in %v s", p.CopyBytes, p.EstimatedSeconds)
	}
	conv := strings.Join(p.Conversions, "\n")
	for _, w := range []string{"scsi bus → SATA (AHCI)", "vmdk → qcow2", "vmxnet3 → e1000", "virt-v2v-in-place is not installed", "SATA disks and e1000 NICs"} {
		if !strings.Contains(conv, w) {
			t.Errorf("conversions %q lack %q", conv, w)
		}
	}
	if p.Adaptation != AdaptCompatible || len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "not converted") {
		t.Errorf("adaptation %s, warnings %v", p.Adaptation, p.Warnings)
	}
	c := p.Create()
	if c.Name != p.Name || c.Host != "h1" || len(c.Disks) != 2 || c.Disks[0].Image != "db-server-prod-root" || c.NICs[0].MAC != "00:50:56:ab:cd:ef" ||
		c.Disks[0].Bus != api.DiskBusSATA || c.NICs[0].Model != api.NICModelE1000 || c.Boot.Firmware != "" {
		t.Errorf("create %+v", c)
	}

	with := opts
	with.VirtV2V = "/usr/bin/virt-v2v-in-place"
	pv := PlanVM(base(), with)
	if pv.Adaptation != AdaptVirtV2V || len(pv.Warnings) != 0 || pv.Disks[0].Bus != BusVirtio || pv.NICs[0].Model != "virtio-net" ||
		!strings.Contains(strings.Join(pv.Conversions, "\n"), "scsi bus → virtio-blk") {
		t.Errorf("with virt-v2v: %s %v %+v %+v", pv.Adaptation, pv.Warnings, pv.Disks, pv.NICs)
	}
	if c := pv.Create(); c.Disks[0].Bus != "" || c.NICs[0].Model != "" {
		t.Errorf("create with virt-v2v: %+v", c)
	}
	// A conversion that fails at run time falls back to the same devices,
	// saying why; the plan it came from is unchanged.
	fb := pv.Compatible("virt-v2v-in-place failed: inspection could not detect the source guest")
	if fb.Adaptation != AdaptCompatible || fb.Disks[0].Bus != CompatibleDiskBus || fb.NICs[0].Model != CompatibleNICModel ||
		!strings.Contains(strings.Join(fb.Conversions, "\n"), "inspection could not detect") || pv.Disks[0].Bus != BusVirtio {
		t.Errorf("fallback %+v from %+v", fb, pv)
	}
	// A guest the source runs on virtio devices has their drivers.
	vio := base()
	vio.Disks[0].Bus, vio.NICs[0].Model = BusVirtio, "virtio"
	if p := PlanVM(vio, opts); p.Adaptation != AdaptNone || p.Disks[0].Bus != BusVirtio || p.NICs[0].Model != "virtio-net" || len(p.Warnings) != 0 {
		t.Errorf("virtio source: %s %+v %+v %v", p.Adaptation, p.Disks, p.NICs, p.Warnings)
	}
	// EFI maps to OVMF, with what does not move said.
	efi := base()
	efi.Firmware = FirmwareEFI
	pe := PlanVM(efi, with)
	if len(pe.Blockers) != 0 || pe.Firmware != FirmwareEFI || pe.Create().Boot.Firmware != api.FirmwareEFI ||
		!strings.Contains(strings.Join(pe.Conversions, "\n"), "OVMF") || !strings.Contains(strings.Join(pe.Warnings, "\n"), "BOOTX64.EFI") {
		t.Errorf("efi source: %+v", pe)
	}

	for _, tc := range []struct {
		name   string
		change func(*Hardware, *Options)
		want   string
	}{
		{"unknown firmware", func(h *Hardware, _ *Options) { h.Firmware = "csm" }, `firmware "csm"`},
		{"windows", func(h *Hardware, _ *Options) { h.GuestOS = "windows2019srv_64Guest" }, "virtio-win"},
		{"unmapped network", func(_ *Hardware, o *Options) { o.NetworkMap = nil }, "VM Network"},
		{"multicast MAC", func(h *Hardware, _ *Options) { h.NICs[0].MAC = "01:00:5e:00:00:01" }, "multicast"},
		{"bad MAC", func(h *Hardware, _ *Options) { h.NICs[0].MAC = "zz" }, "not an Ethernet address"},
		{"no cpus", func(h *Hardware, _ *Options) { h.VCPUs = 0 }, "0 vCPUs"},
		{"huge disk", func(h *Hardware, _ *Options) { h.Disks[0].CapacityBytes = 1 << 60 }, "over the limit"},
		{"no disks", func(h *Hardware, _ *Options) { h.Disks = nil }, "no disks"},
		{"no name", func(h *Hardware, _ *Options) { h.Name = "---" }, "no valid VM name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, o := base(), opts
			tc.change(&h, &o)
			p := PlanVM(h, o)
			if !strings.Contains(strings.Join(p.Blockers, "\n"), tc.want) {
				t.Fatalf("blockers %q lack %q", p.Blockers, tc.want)
			}
		})
	}
	// The default network catches every other one.
	o := opts
	o.NetworkMap = map[string]string{"*": "user"}
	if p := PlanVM(base(), o); len(p.Blockers) != 0 || p.NICs[0].Network != "user" {
		t.Errorf("default network: %v %+v", p.Blockers, p.NICs)
	}
	// No host: the scheduler places the VM.
	o.Host = ""
	if p := PlanVM(base(), o); len(p.Blockers) != 0 || p.Create().Host != "" {
		t.Errorf("no host: %v", p.Blockers)
	}
}

func TestVMName(t *testing.T) {
	for in, want := range map[string]string{
		"Web01": "web01", "a b_c.d": "a-b-c-d", "--x--": "x", "ÄÖ": "", strings.Repeat("a", 70): strings.Repeat("a", 63),
	} {
		if got := VMName(in); got != want {
			t.Errorf("VMName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCapacityBytes(t *testing.T) {
	for _, tc := range []struct {
		c, u string
		want int64
		err  string
	}{
		{"64", "byte * 2^20", 64 << 20, ""},
		{"1048576", "byte", 1 << 20, ""},
		{"1", "byte * 2^60", 0, "over the limit"},
		{"-1", "byte", 0, "not a whole number"},
		{"1", "furlong", 0, "want byte"},
		{"1", "byte * 2^999", 0, "over the limit"},
	} {
		got, err := capacityBytes(tc.c, tc.u, DefaultMaxDiskBytes)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %s: %v, want %q", tc.c, tc.u, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %s = %d, %v", tc.c, tc.u, got, err)
		}
	}
}
