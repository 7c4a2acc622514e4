package qemu

import (
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// TestDiskNamesDriverAgreesWithAPI: the driver refuses exactly the disk
// names hypervisor.CheckDiskNames refuses (the rule the API applies), so a
// VM the API accepted never fails on its host for its disk names; and no
// disk file can be one of the VM directory's other files.
func TestDiskNamesDriverAgreesWithAPI(t *testing.T) {
	long := strings.Repeat("d", hypervisor.DiskSerialLen)
	sets := [][]string{
		{"seed"}, {"cidata"}, {"root", "seed"}, {"root", "root"},
		{long + "-a", long + "-b"}, {long, long + "x"},
		{"handle"}, {"qemu"}, {"console"}, {"serial"}, {"qmp"}, {"vnc"}, {"kept"},
		{"root", "data", "scratch"}, {"seeds", "cidata2", long},
	}
	for _, names := range sets {
		cfg := hypervisor.VMConfig{UID: testUID}
		for _, n := range names {
			cfg.Disks = append(cfg.Disks, hypervisor.DiskConfig{Name: n, SizeMiB: 8})
		}
		apiErr := hypervisor.CheckDiskNames(names)
		drvErr := validate(cfg)
		if (apiErr == nil) != (drvErr == nil) {
			t.Errorf("names %q: API rule says %v, driver says %v", names, apiErr, drvErr)
		}
	}
	for _, f := range vmDirFiles {
		if strings.HasSuffix(f, diskFile("")) {
			t.Errorf("vm dir file %q could be a disk's file", f)
		}
	}
}
