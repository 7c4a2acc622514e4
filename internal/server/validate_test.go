package server

import (
	"errors"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func testImages(name string) (*api.Image, bool) {
	imgs := map[string]*api.Image{
		"tiny":    {Meta: api.Meta{Name: "tiny"}, Kind: api.ImageDisk, State: api.ImageReady, VirtualSizeBytes: 64 << 20},
		"vmlinuz": {Meta: api.Meta{Name: "vmlinuz"}, Kind: api.ImageKernel, State: api.ImageReady},
		"initrd":  {Meta: api.Meta{Name: "initrd"}, Kind: api.ImageInitrd, State: api.ImageReady},
		"busy":    {Meta: api.Meta{Name: "busy"}, Kind: api.ImageDisk, State: api.ImageImporting},
	}
	img, ok := imgs[name]
	return img, ok
}

var testLimits = hostLimits{maxVCPUs: 8, maxMemoryMiB: 16384, hostExists: func(n string) bool { return n == "h1" }}

func validCreate() api.VMCreate {
	return api.VMCreate{
		Name: "web-1", VCPUs: 1, MemoryMiB: 256,
		Disks: []api.Disk{{Image: "tiny"}},
		Boot:  api.Boot{Kernel: "vmlinuz", Initrd: "initrd", Cmdline: "console=ttyS0"},
	}
}

func TestValidateVMCreateDefaults(t *testing.T) {
	t.Parallel()
	req := validCreate()
	req.NICs = []api.NIC{{MAC: "52:54:00:AA:BB:CC"}}
	if err := validateVMCreate(&req, testImages, testLimits); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	if req.PowerState != api.PowerRunning || req.StopTimeoutSeconds != defaultStopTimeout || req.OnCrash != api.OnCrashRestart {
		t.Errorf("defaults not filled: %+v", req)
	}
	if req.Disks[0].Name != "disk0" || req.NICs[0].Network != api.NetworkUser || req.NICs[0].MAC != "52:54:00:aa:bb:cc" {
		t.Errorf("disk/nic defaults not filled: %+v %+v", req.Disks, req.NICs)
	}
}

func TestValidateVMCreateErrorsNameTheField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		mod   func(*api.VMCreate)
		field string
		text  string
	}{
		{"empty name", func(r *api.VMCreate) { r.Name = "" }, "name", "required"},
		{"uppercase name", func(r *api.VMCreate) { r.Name = "Web" }, "name", "not a valid name"},
		{"underscore name", func(r *api.VMCreate) { r.Name = "a_b" }, "name", "not a valid name"},
		{"long name", func(r *api.VMCreate) { r.Name = strings.Repeat("a", 64) }, "name", "not a valid name"},
		{"vcpus 0", func(r *api.VMCreate) { r.VCPUs = 0 }, "vcpus", "at least 1"},
		{"vcpus too many", func(r *api.VMCreate) { r.VCPUs = 9 }, "vcpus", "more than any host"},
		{"memory 0", func(r *api.VMCreate) { r.MemoryMiB = 0 }, "memoryMiB", "at least"},
		{"memory absurd", func(r *api.VMCreate) { r.MemoryMiB = 1 << 40 }, "memoryMiB", "more memory than any host"},
		{"unknown image", func(r *api.VMCreate) { r.Disks[0].Image = "nope" }, "disks[0].image", "not found"},
		{"image importing", func(r *api.VMCreate) { r.Disks[0].Image = "busy" }, "disks[0].image", "not ready"},
		{"kernel as disk", func(r *api.VMCreate) { r.Disks[0].Image = "vmlinuz" }, "disks[0].image", "kernel image"},
		{"shrinking overlay", func(r *api.VMCreate) { r.Disks[0].SizeMiB = 1 }, "disks[0].sizeMiB", "only grow"},
		{"blank without size", func(r *api.VMCreate) { r.Disks = append(r.Disks, api.Disk{}) }, "disks[1].sizeMiB", "needs a size"},
		{"duplicate disk", func(r *api.VMCreate) { r.Disks = append(r.Disks, api.Disk{Name: "disk0", SizeMiB: 10}) }, "disks[1].name", "twice"},
		{"address on a user-mode NIC", func(r *api.VMCreate) { r.NICs = []api.NIC{{Network: api.NetworkUser, IP: "10.0.0.5"}} }, "nics[0].ip", "no fixed address"},
		{"groups on a user-mode NIC", func(r *api.VMCreate) { r.NICs = []api.NIC{{SecurityGroups: []string{"web"}}} }, "nics[0].securityGroups", "no security groups"},
		{"bad mac", func(r *api.VMCreate) { r.NICs = []api.NIC{{MAC: "zz"}} }, "nics[0].mac", "not a MAC"},
		{"multicast mac", func(r *api.VMCreate) { r.NICs = []api.NIC{{MAC: "01:00:5e:00:00:01"}} }, "nics[0].mac", "multicast"},
		{"unknown kernel", func(r *api.VMCreate) { r.Boot.Kernel = "nope" }, "boot.kernel", "not found"},
		{"initrd without kernel", func(r *api.VMCreate) { r.Boot.Kernel = "" }, "boot.kernel", "need a kernel"},
		{"no disk no kernel", func(r *api.VMCreate) { r.Boot = api.Boot{}; r.Disks = nil }, "disks", "needs a disk"},
		{"unknown disk bus", func(r *api.VMCreate) { r.Disks[0].Bus = "scsi" }, "disks[0].bus", `virtio or sata, not "scsi"`},
		{"seven sata disks", func(r *api.VMCreate) {
			r.Disks = nil
			for i := 0; i < 7; i++ {
				r.Disks = append(r.Disks, api.Disk{SizeMiB: 8, Bus: api.DiskBusSATA})
			}
		}, "disks[6].bus", "at most 6 disks on sata"},
		{"unknown nic model", func(r *api.VMCreate) { r.NICs = []api.NIC{{Model: "rtl8139"}} }, "nics[0].model", `virtio or e1000, not "rtl8139"`},
		{"unknown firmware", func(r *api.VMCreate) { r.Boot.Firmware = "uefi" }, "boot.firmware", `bios or efi, not "uefi"`},
		{"bad power state", func(r *api.VMCreate) { r.PowerState = "on" }, "powerState", "running, stopped or paused"},
		{"bad label", func(r *api.VMCreate) { r.Labels = map[string]string{"ok": "no spaces"} }, "labels.ok", "not valid"},
		{"unknown host", func(r *api.VMCreate) { r.Host = "h9" }, "host", "not found"},
		{"huge user-data", func(r *api.VMCreate) {
			r.CloudInit = &api.CloudInit{UserData: strings.Repeat("x", maxCloudInitBytes+1)}
		}, "cloudInit.userData", "more than"},
		{"stop timeout", func(r *api.VMCreate) { r.StopTimeoutSeconds = -1 }, "stopTimeoutSeconds", "from 1"},
		{"crash policy", func(r *api.VMCreate) { r.OnCrash = "sometimes" }, "onCrash", "restart or stop"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := validCreate()
			c.mod(&req)
			err := validateVMCreate(&req, testImages, testLimits)
			var ae *api.Error
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want an *api.Error", err)
			}
			if ae.Code != api.CodeInvalid || ae.Field != c.field || !strings.Contains(ae.Message, c.text) {
				t.Errorf("got %s field=%q %q; want invalid field=%q containing %q", ae.Code, ae.Field, ae.Message, c.field, c.text)
			}
		})
	}
}

func TestValidateVMCreateNoHostsSkipsMaxima(t *testing.T) {
	t.Parallel()
	req := validCreate()
	req.VCPUs, req.MemoryMiB = 64, 1<<20
	if err := validateVMCreate(&req, testImages, hostLimits{}); err != nil {
		t.Fatalf("with no hosts the maxima are unknown; got %v", err)
	}
}
