package server

import (
	"errors"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// TestValidateDiskNamesTheDriverRefuses: a name the drivers reserve, or two
// names the guest would see as one serial, are refused at the API with the
// disk's field, not accepted and failed later on the host.
func TestValidateDiskNamesTheDriverRefuses(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", hypervisor.DiskSerialLen)
	cases := []struct {
		name  string
		disks []api.Disk
		field string
		text  string
	}{
		{"seed", []api.Disk{{Image: "tiny"}, {Name: "seed", SizeMiB: 8}}, "disks[1].name", "reserved"},
		{"cidata", []api.Disk{{Name: "cidata", Image: "tiny"}}, "disks[0].name", "reserved"},
		{"same serial", []api.Disk{{Name: long + "-one", Image: "tiny"}, {Name: long + "-two", SizeMiB: 8}}, "disks[1].name", "serial"},
		{"default name taken", []api.Disk{{Name: "disk1", Image: "tiny"}, {SizeMiB: 8}}, "disks[1].name", "twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := validCreate()
			req.Disks = c.disks
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
	for _, n := range hypervisor.ReservedDiskNames {
		req := validCreate()
		req.Disks[0].Name = n
		if err := validateVMCreate(&req, testImages, testLimits); err == nil {
			t.Errorf("disk name %q, reserved by the drivers, was accepted", n)
		}
	}
	// Names that only look alike are fine.
	req := validCreate()
	req.Disks = []api.Disk{{Name: "seeds", Image: "tiny"}, {Name: "cidata2", SizeMiB: 8}, {Name: long, SizeMiB: 8}}
	if err := validateVMCreate(&req, testImages, testLimits); err != nil {
		t.Errorf("distinct names refused: %v", err)
	}
}
