package qemu

import (
	"context"
	"fmt"
	"strings"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/qmp"
)

// q35's root bus takes no hot-plugged devices, so every VM has HotplugPorts
// PCIe root ports (pvslot0 and on), one device in each, shared by the
// network NICs (at start and plugged in later) and the volumes: enough for
// NICSlots NICs and hypervisor.MaxVolumes volumes together.
const HotplugPorts = NICSlots + hypervisor.MaxVolumes

func slotID(k int) string { return fmt.Sprintf("pvslot%d", k) }

// slotArgs are the VM's hot-plug root ports.
func slotArgs() []string {
	var a []string
	for k := 0; k < HotplugPorts; k++ {
		a = append(a, "-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d", slotID(k), k+1))
	}
	return a
}

// slotted are a running VM's devices in its hot-plug ports (network NICs,
// "pvnic-…", and volumes, "vol-…") and the port each is in. They are read
// from QOM, not from query-pci: until the guest's firmware has numbered
// the root ports' buses (and under -S, before it runs at all), query-pci
// lists no device behind them.
func slotted(ctx context.Context, c *qmp.Client) (map[string]int, error) {
	var props []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := c.Execute(ctx, "qom-list", map[string]any{"path": "/machine/peripheral"}, &props); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, p := range props {
		if !strings.HasPrefix(p.Name, "pvnic-") && !strings.HasPrefix(p.Name, "vol-") || !strings.HasPrefix(p.Type, "child<") {
			continue
		}
		var bus string
		if err := c.Execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/" + p.Name, "property": "parent_bus"}, &bus); err != nil {
			if isDeviceMissing(err) {
				continue // it left between the listing and this read: an unplug ending
			}
			return nil, fmt.Errorf("reading the slot of %s: %w", p.Name, err)
		}
		if strings.HasSuffix(bus, "/pcie.0") {
			continue // the root volume (BootVolume): on the root bus, in no slot
		}
		// The bus of root port pvslotK is /machine/peripheral/pvslotK/pvslotK.
		var k int
		if _, err := fmt.Sscanf(bus[strings.LastIndex(bus, "/")+1:], "pvslot%d", &k); err != nil {
			return nil, fmt.Errorf("device %s is on bus %q, not in a slot of Polyvisor's", p.Name, bus)
		}
		out[p.Name] = k
	}
	return out, nil
}

// freeSlot is a hot-plug port no device in have is in, or -1.
func freeSlot(have map[string]int) int {
	used := map[int]bool{}
	for _, k := range have {
		used[k] = true
	}
	for k := 0; k < HotplugPorts; k++ {
		if !used[k] {
			return k
		}
	}
	return -1
}
