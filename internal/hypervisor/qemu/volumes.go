package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/qmp"
)

var _ hypervisor.VolumeAttacher = (*Driver)(nil)

// A volume is plugged in as four QEMU objects named from its device id
// (hypervisor.VolumeID): the fd set holding its file's descriptor (opaque
// "pv:<id>"), the qcow2 node "<id>-fmt" over that descriptor, a throttle
// group "<id>-tg" with the node "<id>-thr" over it, and the virtio-blk
// device "<id>" in one of the VM's hot-plug root ports (ports.go). QEMU runs in an
// empty chroot as an unprivileged user: it never opens the file by path.

// running is the VM's live QMP connection, or errNotRunning.
func (d *Driver) running(ctx context.Context, h *hypervisor.Handle, doing string) (*vm, error) {
	if err := checkHandle(h); err != nil {
		return nil, err
	}
	v, err := d.attached(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("%s on vm %s: %w", doing, h.UID, err)
	}
	if v == nil {
		return nil, fmt.Errorf("%s on vm %s: %w", doing, h.UID, errNotRunning)
	}
	return v, nil
}

// AttachVolume plugs a volume in: its descriptor into an fd set, a qcow2
// node over it, a throttle group and node, and a virtio-blk device in a
// free hot-plug port. A step that fails undoes the steps before it.
func (d *Driver) AttachVolume(ctx context.Context, h *hypervisor.Handle, vc hypervisor.VolumeConfig) (err error) {
	v, err := d.running(ctx, h, "attaching volume "+vc.Name)
	if err != nil {
		return err
	}
	id := hypervisor.VolumeID(vc.Name)
	q := v.qmp
	port, err := portFor(ctx, q, vc.Port)
	if err != nil {
		return fmt.Errorf("attaching volume %s: %w", vc.Name, err)
	}
	f, err := openVolume(ctx, &vc)
	if err != nil {
		return fmt.Errorf("attaching volume %s: %w", vc.Name, err)
	}
	defer f.Close()
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	cleanup := func(cmd string, args any) func() {
		return func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = q.Execute(cctx, cmd, args, nil)
		}
	}
	var node map[string]any
	if vc.Export != "" {
		// A connected socket to the export, under a name the nbd
		// driver takes it by (and closes with its node).
		_, export, _ := hypervisor.ParseNBDExport(vc.Export)
		fdname := "pvnbd-" + id
		if err := q.ExecuteFile(ctx, "getfd", map[string]any{"fdname": fdname}, nil, f); err != nil {
			return fmt.Errorf("attaching volume %s: passing its connection: %w", vc.Name, err)
		}
		undo = append(undo, cleanup("closefd", map[string]any{"fdname": fdname}))
		node = map[string]any{"driver": "raw", "node-name": id + "-fmt", "discard": "unmap",
			"file": map[string]any{"driver": "nbd", "export": export, "server": map[string]any{"type": "fd", "str": fdname}}}
	} else {
		var fdset struct {
			FDSetID int `json:"fdset-id"`
			FD      int `json:"fd"`
		}
		if err := q.ExecuteFile(ctx, "add-fd", map[string]any{"opaque": "pv:" + id}, &fdset, f); err != nil {
			return fmt.Errorf("attaching volume %s: passing its file: %w", vc.Name, err)
		}
		undo = append(undo, cleanup("remove-fd", map[string]any{"fdset-id": fdset.FDSetID}))
		node = map[string]any{"driver": "qcow2", "node-name": id + "-fmt", "discard": "unmap",
			"file": map[string]any{"driver": "file", "filename": fmt.Sprintf("/dev/fdset/%d", fdset.FDSetID)}}
	}
	steps := []struct {
		cmd  string
		args map[string]any
		back func() func()
	}{
		{"blockdev-add", node, func() func() { return cleanup("blockdev-del", map[string]any{"node-name": id + "-fmt"}) }},
		{"object-add", map[string]any{
			"qom-type": "throttle-group", "id": id + "-tg", "limits": throttleLimits(vc.IOPS, vc.BPS),
		}, func() func() { return cleanup("object-del", map[string]any{"id": id + "-tg"}) }},
		{"blockdev-add", map[string]any{
			"driver": "throttle", "node-name": id + "-thr", "throttle-group": id + "-tg", "file": id + "-fmt",
		}, func() func() { return cleanup("blockdev-del", map[string]any{"node-name": id + "-thr"}) }},
		{"device_add", map[string]any{
			"driver": "virtio-blk-pci", "id": id, "drive": id + "-thr", "bus": port,
			"serial": hypervisor.DiskSerial(vc.Name),
		}, nil},
	}
	for _, s := range steps {
		if err := q.Execute(ctx, s.cmd, s.args, nil); err != nil {
			return fmt.Errorf("attaching volume %s: %s: %w", vc.Name, s.cmd, err)
		}
		if s.back != nil {
			undo = append(undo, s.back())
		}
	}
	d.log.Info("volume attached", "vm", h.UID, "volume", vc.Name, "device", id, "port", port)
	return nil
}

// throttleLimits are a throttle group's limits; zero is unlimited.
func throttleLimits(iops, bps int64) map[string]any {
	return map[string]any{"iops-total": iops, "bps-total": bps}
}

// portFor is the hot-plug port a volume goes into: want, which must be
// one of the VM's ports and free, or a free one when want is empty.
func portFor(ctx context.Context, q *qmp.Client, want string) (string, error) {
	if want == "" {
		return freePort(ctx, q)
	}
	var k int
	if _, err := fmt.Sscanf(want, "pvslot%d", &k); err != nil || k < 0 || k >= HotplugPorts || slotID(k) != want {
		return "", fmt.Errorf("%q is not a hot-plug port of the vm", want)
	}
	have, err := slotted(ctx, q)
	if err != nil {
		return "", fmt.Errorf("listing devices in hot-plug slots: %w", err)
	}
	for id, s := range have {
		if s == k {
			return "", fmt.Errorf("hot-plug port %s holds %s already", want, id)
		}
	}
	return want, nil
}

// freePort is a hot-plug root port with no device in it: the NICs and
// volumes share them (ports.go).
func freePort(ctx context.Context, q *qmp.Client) (string, error) {
	have, err := slotted(ctx, q)
	if err != nil {
		return "", fmt.Errorf("listing devices in hot-plug slots: %w", err)
	}
	k := freeSlot(have)
	if k < 0 {
		return "", fmt.Errorf("all %d hot-plug slots are in use", HotplugPorts)
	}
	return slotID(k), nil
}

// DetachVolume asks the guest to let the device go, waits until QEMU has
// removed it, then removes its nodes, throttle group and fd set.
func (d *Driver) DetachVolume(ctx context.Context, h *hypervisor.Handle, id string) error {
	v, err := d.running(ctx, h, "detaching volume "+id)
	if err != nil {
		return err
	}
	q := v.qmp
	if err := q.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil && !isDeviceMissing(err) {
		return fmt.Errorf("detaching volume %s: device_del: %w", id, err)
	}
	// DEVICE_DELETED goes to the driver's event loop; the device's
	// absence from the peripherals is the same fact, asked for.
	for {
		gone, err := deviceGone(ctx, q, id)
		if err != nil {
			return fmt.Errorf("detaching volume %s: %w", id, err)
		}
		if gone {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("detaching volume %s: the guest has not released the device: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, s := range []struct {
		cmd  string
		args map[string]any
	}{
		{"blockdev-del", map[string]any{"node-name": id + "-thr"}},
		{"object-del", map[string]any{"id": id + "-tg"}},
		{"blockdev-del", map[string]any{"node-name": id + "-fmt"}},
	} {
		// The device lets its node go a moment after it leaves the
		// peripherals (QEMU releases it once the unplug has finished).
		for {
			err := q.Execute(ctx, s.cmd, s.args, nil)
			if err == nil || isDeviceMissing(err) {
				break
			}
			var qe *qmp.Error
			if !errors.As(err, &qe) || !strings.Contains(qe.Desc, "in use") || ctx.Err() != nil {
				return fmt.Errorf("detaching volume %s: %s: %w", id, s.cmd, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := removeFDSets(ctx, q, id); err != nil {
		return fmt.Errorf("detaching volume %s: %w", id, err)
	}
	d.log.Info("volume detached", "vm", h.UID, "device", id)
	return nil
}

// isDeviceMissing tells a QMP error about an object that is not there.
func isDeviceMissing(err error) bool {
	var qe *qmp.Error
	return errors.As(err, &qe) && (qe.Class == "DeviceNotFound" ||
		strings.Contains(qe.Desc, "not found") || strings.Contains(qe.Desc, "Cannot find"))
}

// deviceGone tells whether the peripheral id has left the VM.
func deviceGone(ctx context.Context, q *qmp.Client, id string) (bool, error) {
	var props []struct {
		Name string `json:"name"`
	}
	if err := q.Execute(ctx, "qom-list", map[string]any{"path": "/machine/peripheral"}, &props); err != nil {
		return false, fmt.Errorf("listing devices: %w", err)
	}
	for _, p := range props {
		if p.Name == id {
			return false, nil
		}
	}
	return true, nil
}

type fdsetInfo struct {
	FDSetID int `json:"fdset-id"`
	FDs     []struct {
		FD     int    `json:"fd"`
		Opaque string `json:"opaque"`
	} `json:"fds"`
}

// removeFDSets removes the fd sets passed for the device id.
func removeFDSets(ctx context.Context, q *qmp.Client, id string) error {
	var sets []fdsetInfo
	if err := q.Execute(ctx, "query-fdsets", nil, &sets); err != nil {
		return fmt.Errorf("listing fd sets: %w", err)
	}
	for _, s := range sets {
		for _, fd := range s.FDs {
			if fd.Opaque == "pv:"+id {
				if err := q.Execute(ctx, "remove-fd", map[string]any{"fdset-id": s.FDSetID}, nil); err != nil {
					return fmt.Errorf("removing fd set %d: %w", s.FDSetID, err)
				}
				break
			}
		}
	}
	return nil
}

// ResizeVolume grows a plugged volume through its top (throttle) node, so
// the device above is told; virtio-blk tells the
// guest its new capacity.
func (d *Driver) ResizeVolume(ctx context.Context, h *hypervisor.Handle, id string, sizeMiB int64) error {
	v, err := d.running(ctx, h, "resizing volume "+id)
	if err != nil {
		return err
	}
	if err := v.qmp.Execute(ctx, "block_resize", map[string]any{"node-name": id + "-thr", "size": sizeMiB << 20}, nil); err != nil {
		return fmt.Errorf("resizing volume %s: %w", id, err)
	}
	return nil
}

// SetVolumeLimits changes the limits of a plugged volume's throttle group.
func (d *Driver) SetVolumeLimits(ctx context.Context, h *hypervisor.Handle, id string, iops, bps int64) error {
	v, err := d.running(ctx, h, "limiting volume "+id)
	if err != nil {
		return err
	}
	if err := v.qmp.Execute(ctx, "qom-set", map[string]any{
		"path": "/objects/" + id + "-tg", "property": "limits", "value": throttleLimits(iops, bps),
	}, nil); err != nil {
		return fmt.Errorf("limiting volume %s: %w", id, err)
	}
	return nil
}

// Volumes lists the plugged volumes: the block devices whose id is a
// volume's, with their size and their throttle group's limits.
func (d *Driver) Volumes(ctx context.Context, h *hypervisor.Handle) ([]hypervisor.VolumeState, error) {
	v, err := d.running(ctx, h, "listing volumes")
	if err != nil {
		return nil, err
	}
	q := v.qmp
	var blocks []struct {
		QDev     string `json:"qdev"`
		Inserted *struct {
			Image struct {
				VirtualSize int64 `json:"virtual-size"`
			} `json:"image"`
		} `json:"inserted"`
	}
	if err := q.Execute(ctx, "query-block", nil, &blocks); err != nil {
		return nil, fmt.Errorf("listing volumes: %w", err)
	}
	slots, err := slotted(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("listing volumes: %w", err)
	}
	var out []hypervisor.VolumeState
	for _, b := range blocks {
		// qdev is "/machine/peripheral/<id>/virtio-backend" or "<id>".
		id := strings.TrimPrefix(b.QDev, "/machine/peripheral/")
		id, _, _ = strings.Cut(id, "/")
		if !strings.HasPrefix(id, "vol-") || b.Inserted == nil {
			continue
		}
		st := hypervisor.VolumeState{ID: id, SizeMiB: b.Inserted.Image.VirtualSize >> 20}
		if k, ok := slots[id]; ok {
			st.Port = slotID(k)
		}
		var lim struct {
			IOPS int64 `json:"iops-total"`
			BPS  int64 `json:"bps-total"`
		}
		if err := q.Execute(ctx, "qom-get", map[string]any{"path": "/objects/" + id + "-tg", "property": "limits"}, &lim); err == nil {
			st.IOPS, st.BPS = lim.IOPS, lim.BPS
		}
		out = append(out, st)
	}
	return out, nil
}

// BootVolume is a VM's root volume on QEMU's command line: its file is
// opened by the agent and inherited as descriptor FD, put in fd set Set
// (opaque "pv:<id>", as a hot-plugged volume's), and the same nodes,
// throttle group and device id as a hot-plugged volume are made over it,
// so that Volumes lists it and it grows and is limited the same way. Its
// device sits on the root bus (it is never unplugged), first to boot.
type BootVolume struct {
	Config hypervisor.VolumeConfig
	FD     int
	Set    int
}

// bootVolumeSet is the fd set of the root volume; hot-plugged volumes
// take the next free ones.
const bootVolumeSet = 1

// args are the root volume's options. A volume of an nbd pool is a
// connected socket to its export: QEMU's nbd driver takes it as fd FD.
func (b *BootVolume) args() []string {
	id := b.Config.ID()
	var a []string
	if b.Config.Export != "" {
		_, export, _ := hypervisor.ParseNBDExport(b.Config.Export)
		a = []string{"-blockdev", fmt.Sprintf("driver=raw,node-name=%s-fmt,discard=unmap,file.driver=nbd,file.server.type=fd,file.server.str=%d,file.export=%s", id, b.FD, esc(export))}
	} else {
		a = []string{
			"-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=pv:%s", b.FD, b.Set, id),
			"-blockdev", fmt.Sprintf("driver=qcow2,node-name=%s-fmt,discard=unmap,file.driver=file,file.filename=/dev/fdset/%d", id, b.Set),
		}
	}
	return append(a,
		"-object", fmt.Sprintf("throttle-group,id=%s-tg,x-iops-total=%d,x-bps-total=%d", id, b.Config.IOPS, b.Config.BPS),
		"-blockdev", fmt.Sprintf("driver=throttle,node-name=%s-thr,throttle-group=%s-tg,file=%s-fmt", id, id, id),
		"-device", fmt.Sprintf("virtio-blk-pci,id=%s,drive=%s-thr,serial=%s,bootindex=1", id, id, esc(hypervisor.DiskSerial(b.Config.Name))),
	)
}

// openBootVolume opens the root volume for QEMU to inherit.
func openBootVolume(ctx context.Context, vc *hypervisor.VolumeConfig) (*os.File, error) {
	if vc == nil {
		return nil, nil
	}
	f, err := openVolume(ctx, vc)
	if err != nil {
		return nil, fmt.Errorf("opening root volume %s: %w", vc.Name, err)
	}
	return f, nil
}

// openVolume opens what QEMU is handed for a volume: its file, or a
// connection to its export. The agent opens it, so QEMU, confined, needs
// neither the pool's path nor a way out to the network (its user is
// refused the host's loopback, see netfilter.go).
func openVolume(ctx context.Context, vc *hypervisor.VolumeConfig) (*os.File, error) {
	if vc.Export == "" {
		// A shared pool's file may have been replaced by another host of
		// the pool: never through a link (to a file of this host's), and
		// only a regular file.
		f, err := os.OpenFile(vc.Path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return nil, fmt.Errorf("opening its file: %w", err)
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			if err == nil {
				err = fmt.Errorf("%s is not a regular file", vc.Path)
			}
			return nil, fmt.Errorf("opening its file: %w", err)
		}
		return f, nil
	}
	addr, _, err := hypervisor.ParseNBDExport(vc.Export)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("connecting to its export: %w", err)
	}
	defer conn.Close()
	f, err := conn.(*net.TCPConn).File()
	if err != nil {
		return nil, fmt.Errorf("connecting to its export: %w", err)
	}
	return f, nil
}
