package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/qmp"
)

// A NIC on a Polyvisor network attaches to its port's tap, which the
// agent's dataplane makes (persistent, on the network's bridge). The
// driver opens the tap as the agent's user and hands QEMU the descriptor:
// at start as an inherited descriptor, when hot-plugged through QMP
// (getfd). QEMU never opens /dev/net/tun itself, so it needs no access to
// it in its chroot and as its unprivileged user, and it cannot attach to
// any tap it was not given. There is no vhost-net here: the data path is
// QEMU's own.
//
// Network NICs are PCI Express devices, each in a hot-plug root port of
// its own (ports.go), so that any of them can be unplugged and new ones
// plugged in while the guest runs.
// Their device ids are derived from their MACs, which is how SetNICs
// matches a VM's NICs with its config.

// NICSlots is how many network NICs a VM can have, at start and plugged in
// later together.
const NICSlots = 8

var tapNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)

// nicID is the QEMU device id of a network NIC, and netdevID its backend's.
func nicID(mac string) string    { return "pvnic-" + strings.ReplaceAll(strings.ToLower(mac), ":", "") }
func netdevID(mac string) string { return "pvnet-" + strings.ReplaceAll(strings.ToLower(mac), ":", "") }

// openTap opens an existing tap for QEMU: a multiqueue-less descriptor
// with virtio-net headers. A tap that does not exist is not made here:
// only the dataplane's persistent taps are wired into its networks.
func openTap(name string) (*os.File, error) {
	if !tapNameRE.MatchString(name) {
		return nil, fmt.Errorf("tap name %q is not a device name", name)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/net/tun for tap %s: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("opening tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("opening tap %s: %w", name, err)
	}
	got, err := unix.NewIfreq(name)
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.TUNGETIFF, got)
	}
	if err != nil || got.Uint16()&unix.IFF_PERSIST == 0 {
		// TUNSETIFF made a new tap: closing the descriptor removes it.
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s does not exist: the host's network dataplane has not made the port", name)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// nicFiles are the descriptors of a starting VM's NICs, in NIC order: the
// QEMU ends of the user-mode NICs' socket pairs and the network NICs' taps.
type nicFiles struct {
	user  *userNet
	taps  []*os.File
	files []*os.File // in NIC order
}

// openNICs starts the user-mode networks and opens the taps of a VM's
// NICs.
func (d *Driver) openNICs(dir string, nics []hypervisor.NICConfig, logf *os.File, cg *vmCgroup) (_ *nicFiles, err error) {
	users := 0
	for _, n := range nics {
		if n.Tap == "" {
			users++
		}
	}
	un, err := d.startUserNet(dir, users, logf, cg)
	if err != nil {
		return nil, err
	}
	f := &nicFiles{user: un}
	defer func() {
		if err != nil {
			f.close()
			un.kill()
		}
	}()
	u := 0
	for i, n := range nics {
		if n.Tap == "" {
			f.files = append(f.files, un.qemuEnds[u])
			u++
			continue
		}
		t, err := openTap(n.Tap)
		if err != nil {
			return nil, fmt.Errorf("nic %d: %w", i, err)
		}
		f.taps = append(f.taps, t)
		f.files = append(f.files, t)
	}
	return f, nil
}

// fds are the descriptor numbers QEMU sees the NICs under, as its first
// extra files.
func (f *nicFiles) fds() []int {
	out := make([]int, len(f.files))
	for i := range f.files {
		out[i] = 3 + i
	}
	return out
}

// close drops the agent's copies, once QEMU has its own (or will not run).
func (f *nicFiles) close() {
	f.user.closeQEMUEnds()
	for _, t := range f.taps {
		t.Close()
	}
	f.taps = nil
}

// SetNICs plugs into a running VM the network NICs of nics it lacks, and
// unplugs those it has that nics no longer has.
func (d *Driver) SetNICs(ctx context.Context, h *hypervisor.Handle, nics []hypervisor.NICConfig) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	for i, n := range nics {
		if n.Tap != "" && n.MAC == "" {
			return fmt.Errorf("plugging nics of vm %s: nic %d has no mac", h.UID, i)
		}
	}
	v, err := d.attached(ctx, h)
	if err != nil {
		return err
	}
	if v == nil {
		return nil // not running: its next start has them
	}
	// Volumes share the ports: have holds them too, never unplugged here.
	have, err := slotted(ctx, v.qmp)
	if err != nil {
		return fmt.Errorf("listing nics of vm %s: %w", h.UID, err)
	}
	want := map[string]hypervisor.NICConfig{}
	for _, n := range nics {
		if n.Tap != "" {
			want[nicID(n.MAC)] = n
		}
	}
	log := d.log.With("vm", h.UID)
	for id, slot := range have {
		if _, ok := want[id]; ok || !strings.HasPrefix(id, "pvnic-") {
			continue
		}
		if err := unplugNIC(ctx, v.qmp, id); err != nil {
			return fmt.Errorf("unplugging nic %s of vm %s: %w", id, h.UID, err)
		}
		delete(have, id)
		log.Info("unplugged nic", "nic", id, "slot", slot)
	}
	for _, n := range nics {
		if n.Tap == "" {
			continue
		}
		id := nicID(n.MAC)
		if _, ok := have[id]; ok {
			continue
		}
		slot := freeSlot(have)
		if slot < 0 {
			return fmt.Errorf("plugging nic %s into vm %s: all %d hot-plug slots are taken", n.MAC, h.UID, HotplugPorts)
		}
		if err := plugNIC(ctx, v.qmp, n, slot); err != nil {
			return fmt.Errorf("plugging nic %s into vm %s: %w", n.MAC, h.UID, err)
		}
		have[id] = slot
		log.Info("plugged nic", "nic", id, "tap", n.Tap, "slot", slot)
	}
	return nil
}

// pluggedNICs are a running VM's network NICs and the slot each is in.
func pluggedNICs(ctx context.Context, c *qmp.Client) (map[string]int, error) {
	all, err := slotted(ctx, c)
	if err != nil {
		return nil, err
	}
	for id := range all {
		if !strings.HasPrefix(id, "pvnic-") {
			delete(all, id)
		}
	}
	return all, nil
}

// plugNIC hands QEMU the tap and plugs a virtio NIC on it into a slot.
func plugNIC(ctx context.Context, c *qmp.Client, n hypervisor.NICConfig, slot int) error {
	t, err := openTap(n.Tap)
	if err != nil {
		return err
	}
	defer t.Close()
	nd := netdevID(n.MAC)
	if err := c.ExecuteFile(ctx, "getfd", map[string]any{"fdname": nd}, nil, t); err != nil {
		return fmt.Errorf("passing tap %s: %w", n.Tap, err)
	}
	if err := c.Execute(ctx, "netdev_add", map[string]any{"type": "tap", "id": nd, "fd": nd, "vhost": false}, nil); err != nil {
		c.Execute(ctx, "closefd", map[string]any{"fdname": nd}, nil)
		return fmt.Errorf("adding its backend: %w", err)
	}
	// No option ROM: QEMU, chrooted by now, could not read one, and a NIC
	// plugged into a running guest is not booted from.
	args := map[string]any{"driver": "virtio-net-pci", "id": nicID(n.MAC), "netdev": nd, "mac": n.MAC, "bus": slotID(slot), "romfile": ""}
	if err := c.Execute(ctx, "device_add", args, nil); err != nil {
		c.Execute(ctx, "netdev_del", map[string]any{"id": nd}, nil)
		return fmt.Errorf("adding the nic: %w", err)
	}
	return nil
}

// unplugTimeout bounds how long the guest may take to let a NIC go.
const unplugTimeout = 20 * time.Second

// unplugNIC asks the guest to let a NIC go, waits until QEMU has removed
// it, then removes its backend.
func unplugNIC(ctx context.Context, c *qmp.Client, id string) error {
	if err := c.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		var qe *qmp.Error
		if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" {
			return err
		}
	}
	deadline := time.Now().Add(unplugTimeout)
	for {
		have, err := pluggedNICs(ctx, c)
		if err != nil {
			return err
		}
		if _, ok := have[id]; !ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest did not release the nic within %s", unplugTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	nd := "pvnet-" + strings.TrimPrefix(id, "pvnic-")
	if err := c.Execute(ctx, "netdev_del", map[string]any{"id": nd}, nil); err != nil {
		var qe *qmp.Error
		if !errors.As(err, &qe) {
			return err
		}
	}
	return nil
}
