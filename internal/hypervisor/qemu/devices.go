package qemu

import (
	"fmt"
	"strconv"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// A VM's disks are virtio-blk and its NICs virtio-net unless its config
// asks for devices a guest without virtio drivers can use: SATA disks on
// the AHCI controller q35 has built in (six ports, ide.0 to ide.5) and
// e1000 NICs. Hot-plugged NICs and volumes are always virtio.

// Disk buses and NIC models of a VMConfig.
const (
	busVirtio, busSATA      = "virtio", "sata"
	modelVirtio, modelE1000 = "virtio", "e1000"
	sataPorts               = 6
)

// sataDevice is the -device of a disk on the next free AHCI port.
func sataDevice(node string, next *int) string {
	port := *next
	*next++
	return "ide-hd,drive=" + node + ",id=sata-" + node + ",bus=ide." + strconv.Itoa(port)
}

// nicDevice is the QEMU device model of a NIC.
func nicDevice(n hypervisor.NICConfig) string {
	if n.Model == modelE1000 {
		return "e1000"
	}
	return "virtio-net-pci"
}

// validateDevices checks the disk buses and NIC models of a VMConfig.
func validateDevices(cfg hypervisor.VMConfig) error {
	sata := 0
	for i, dc := range cfg.Disks {
		switch dc.Bus {
		case "", busVirtio:
		case busSATA:
			if sata++; sata > sataPorts {
				return fmt.Errorf("validating vm config: disk %d: more than %d disks on sata", i, sataPorts)
			}
		default:
			return fmt.Errorf("validating vm config: disk %d: bus %q is neither virtio nor sata", i, dc.Bus)
		}
	}
	for i, n := range cfg.NICs {
		if n.Model != "" && n.Model != modelVirtio && n.Model != modelE1000 {
			return fmt.Errorf("validating vm config: nic %d: model %q is neither virtio nor e1000", i, n.Model)
		}
	}
	return nil
}
