package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/qmp"
)

// TestSlottedDeviceLeaving: a device that QEMU lists among its
// peripherals but has removed by the time its slot is read (a NIC whose
// unplug is ending, as when its removal is waited for) is gone, not an
// error: the wait for a NIC's unplug failed with "DeviceNotFound" when it
// raced the guest's release.
func TestSlottedDeviceLeaving(t *testing.T) {
	ours, theirs := net.Pipe()
	t.Cleanup(func() { ours.Close(); theirs.Close() })
	go func() {
		send := func(line string) { theirs.Write([]byte(line + "\n")) }
		send(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}`)
		sc := bufio.NewScanner(theirs)
		for sc.Scan() {
			var cmd struct {
				Execute   string            `json:"execute"`
				ID        string            `json:"id"`
				Arguments map[string]string `json:"arguments"`
			}
			if json.Unmarshal(sc.Bytes(), &cmd) != nil {
				continue
			}
			switch {
			case cmd.Execute == "qom-list":
				send(fmt.Sprintf(`{"return": [{"name": "pvnic-525400000001", "type": "child<virtio-net-pci>"}, {"name": "pvnic-525400000002", "type": "child<virtio-net-pci>"}, {"name": "vol-a", "type": "child<virtio-blk-pci>"}, {"name": "pvslot0", "type": "child<pcie-root-port>"}], "id": %q}`, cmd.ID))
			case cmd.Execute == "qom-get" && cmd.Arguments["path"] == "/machine/peripheral/pvnic-525400000002":
				send(fmt.Sprintf(`{"error": {"class": "DeviceNotFound", "desc": "Device '/machine/peripheral/pvnic-525400000002' not found"}, "id": %q}`, cmd.ID))
			case cmd.Execute == "qom-get" && cmd.Arguments["path"] == "/machine/peripheral/vol-a":
				send(fmt.Sprintf(`{"return": "/machine/peripheral/pvslot3/pvslot3", "id": %q}`, cmd.ID))
			case cmd.Execute == "qom-get":
				send(fmt.Sprintf(`{"return": "/machine/peripheral/pvslot1/pvslot1", "id": %q}`, cmd.ID))
			default:
				send(fmt.Sprintf(`{"return": {}, "id": %q}`, cmd.ID))
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.NewClient(ctx, ours)
	if err != nil {
		t.Fatal(err)
	}
	got, err := slotted(ctx, c)
	if err != nil {
		t.Fatalf("a device leaving as its slot is read: %v", err)
	}
	if len(got) != 2 || got["pvnic-525400000001"] != 1 || got["vol-a"] != 3 {
		t.Fatalf("slotted: %v, want pvnic-525400000001 in slot 1 and vol-a in slot 3", got)
	}
	nics, err := pluggedNICs(ctx, c)
	if err != nil || len(nics) != 1 {
		t.Fatalf("plugged nics: %v %v", nics, err)
	}
}
