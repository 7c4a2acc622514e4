package cli

import (
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestVMCreateFirmwareFlag: --firmware reaches the request as
// boot.firmware; a value that is neither bios nor efi is refused naming
// the flag, and a provider's VM takes none.
func TestVMCreateFirmwareFlag(t *testing.T) {
	for _, fw := range []string{"", api.FirmwareBIOS, api.FirmwareEFI} {
		f := vmCreateFlags{vcpus: 1, memoryMiB: 128, image: "debian", firmware: fw}
		req, err := f.request("v1")
		if err != nil || req.Boot.Firmware != fw {
			t.Errorf("--firmware %q: boot %+v, %v", fw, req.Boot, err)
		}
	}
	f := vmCreateFlags{vcpus: 1, memoryMiB: 128, image: "debian", firmware: "uefi"}
	if _, err := f.request("v1"); err == nil || !strings.Contains(err.Error(), "--firmware") {
		t.Errorf("--firmware uefi: %v", err)
	}
	f = vmCreateFlags{vcpus: 1, memoryMiB: 128, provider: "vc1", template: "t", firmware: api.FirmwareEFI}
	if _, err := f.request("v1"); err == nil || !strings.Contains(err.Error(), "--firmware") {
		t.Errorf("--firmware with --provider: %v", err)
	}
}
