package qemu

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/kdomanski/iso9660"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// safeName is what UIDs and disk names may look like: they become file
// names.
var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// validate checks what the driver relies on in a VMConfig.
func validate(cfg hypervisor.VMConfig) error {
	if !safeName.MatchString(cfg.UID) || cfg.UID == keptDirName {
		return fmt.Errorf("validating vm config: uid %q is not a safe file name", cfg.UID)
	}
	names := make([]string, len(cfg.Disks))
	for i, dc := range cfg.Disks {
		n := diskName(dc, i)
		if !safeName.MatchString(n) {
			return fmt.Errorf("validating vm config: disk name %q is not a safe file name", n)
		}
		if dc.SharedPath != "" && !filepath.IsAbs(dc.SharedPath) {
			return fmt.Errorf("validating vm config: shared disk %q: path %q is not absolute", n, dc.SharedPath)
		}
		if dc.BackingFile == "" && dc.SizeMiB <= 0 && dc.SharedPath == "" {
			return fmt.Errorf("validating vm config: blank disk %q needs a size", n)
		}
		names[i] = n
	}
	// The API checks disk names with the same rule, so a VM it accepted is
	// never refused here; diskFile keeps disk files apart from the VM's
	// other files.
	if err := hypervisor.CheckDiskNames(names); err != nil {
		return fmt.Errorf("validating vm config: %w", err)
	}
	taps := 0
	for i, n := range cfg.NICs {
		if n.Tap != "" {
			if !tapNameRE.MatchString(n.Tap) {
				return fmt.Errorf("validating vm config: nic %d: tap %q is not a device name", i, n.Tap)
			}
			if taps++; taps > NICSlots {
				return fmt.Errorf("validating vm config: nic %d: more than %d nics on networks", i, NICSlots)
			}
			continue
		}
		if n.Network != "" && n.Network != "user" {
			return fmt.Errorf("validating vm config: nic %d: network %q has no tap on this host: %w", i, n.Network, hypervisor.ErrNotSupported)
		}
	}
	if cfg.Kernel == "" && (cfg.Initrd != "" || cfg.Cmdline != "") {
		return errors.New("validating vm config: initrd or cmdline given without a kernel")
	}
	if err := validateDevices(cfg); err != nil {
		return err
	}
	return validateFirmware(cfg)
}

func diskName(dc hypervisor.DiskConfig, i int) string {
	if dc.Name != "" {
		return dc.Name
	}
	return "disk" + strconv.Itoa(i)
}

// vmDirFiles are the files of a VM's directory besides its disks.
var vmDirFiles = []string{handleFile, qmpSock, serialSock, vncSock, consoleLog, qemuLog, pidFile, seedISO, nbdSock, efiVarsFile}

// diskFile is the file of a disk in its VM's directory. No other file of
// the directory ends in ".qcow2" (vmDirFiles), so no disk name can collide
// with one.
func diskFile(name string) string { return name + ".qcow2" }

// Create makes the VM's directory (StateDir/<uid>, mode 0700), its disks
// (qcow2 overlays of their backing images, or blank qcow2) and its NoCloud
// seed ISO, and persists the handle in handle.json. It removes everything
// it made when it fails.
func (d *Driver) Create(ctx context.Context, cfg hypervisor.VMConfig) (h *hypervisor.Handle, err error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	if d.cfg.StateDir == "" {
		return nil, errors.New("creating vm: driver has no state dir")
	}
	stateDir, err := filepath.Abs(d.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("creating vm: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("making state dir: %w", err)
	}
	dir := filepath.Join(stateDir, cfg.UID)
	if _, err := os.Stat(dir); err == nil {
		// Left by a create the agent did not see finish. Nothing can run
		// from it unless a QEMU names it: then refuse rather than clobber.
		if _, _, running := runningFromPidfile(&hypervisor.Handle{Dir: dir, UID: cfg.UID}); running {
			return nil, fmt.Errorf("creating vm %s: a qemu already runs from %s", cfg.UID, dir)
		}
		d.log.Warn("removing a half-made vm dir", "dir", dir)
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("removing a half-made vm dir: %w", err)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making vm dir: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(dir); rerr != nil {
				d.log.Error("rolling back vm dir", "dir", dir, "err", rerr)
			}
		}
	}()

	h = &hypervisor.Handle{
		Version: hypervisor.HandleVersion,
		Driver:  DriverName,
		Name:    cfg.Name,
		UID:     cfg.UID,
		Dir:     dir,
	}
	if err := d.sockets(h); err != nil {
		return nil, err
	}
	for i, dc := range cfg.Disks {
		df, err := d.createDisk(ctx, dir, dc, i)
		if err != nil {
			return nil, err
		}
		h.Disks = append(h.Disks, df)
	}
	if cfg.CloudInit != nil {
		seed := filepath.Join(dir, seedISO)
		if err := writeSeed(seed, cfg); err != nil {
			return nil, err
		}
		h.Extra[extraSeed] = seed
	}
	if isEFI(cfg) {
		if err := d.createEFIVars(dir, h); err != nil {
			return nil, err
		}
	}
	if err := saveHandle(h); err != nil {
		return nil, err
	}
	d.log.Info("created vm", "vm", cfg.UID, "name", cfg.Name, "dir", dir, "disks", len(h.Disks))
	return h, nil
}

// createDisk makes one disk with qemu-img.
func (d *Driver) createDisk(ctx context.Context, dir string, dc hypervisor.DiskConfig, i int) (hypervisor.DiskFile, error) {
	name := diskName(dc, i)
	if dc.SharedPath != "" {
		// On shared storage: used where it is, made by its pool's host.
		size := dc.SizeMiB
		if size <= 0 {
			var err error
			if size, err = d.virtualSizeMiB(ctx, dc.SharedPath); err != nil {
				return hypervisor.DiskFile{}, err
			}
		}
		return hypervisor.DiskFile{Name: name, Path: dc.SharedPath, Format: "qcow2", SizeMiB: size, Shared: true}, nil
	}
	path := filepath.Join(dir, diskFile(name))
	args := []string{"create", "-q", "-f", "qcow2"}
	if dc.BackingFile != "" {
		backing, err := filepath.Abs(dc.BackingFile)
		if err != nil {
			return hypervisor.DiskFile{}, fmt.Errorf("resolving backing file of disk %s: %w", name, err)
		}
		if _, err := os.Stat(backing); err != nil {
			return hypervisor.DiskFile{}, fmt.Errorf("checking backing file of disk %s: %w", name, err)
		}
		args = append(args, "-b", backing, "-F", "qcow2")
	}
	args = append(args, path)
	if dc.SizeMiB > 0 {
		args = append(args, strconv.FormatInt(dc.SizeMiB, 10)+"M")
	}
	if out, err := exec.CommandContext(ctx, d.cfg.QEMUImgBinary, args...).CombinedOutput(); err != nil {
		return hypervisor.DiskFile{}, fmt.Errorf("creating disk %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	size := dc.SizeMiB
	if size <= 0 {
		var err error
		if size, err = d.virtualSizeMiB(ctx, path); err != nil {
			return hypervisor.DiskFile{}, err
		}
	}
	return hypervisor.DiskFile{Name: name, Path: path, Format: "qcow2", SizeMiB: size}, nil
}

func (d *Driver) virtualSizeMiB(ctx context.Context, path string) (int64, error) {
	// The qcow2 header says it (big-endian size at byte 24): no process
	// on a create's path, which a migration's target waits for.
	if f, err := os.Open(path); err == nil {
		var hdr [32]byte
		_, rerr := io.ReadFull(f, hdr[:])
		f.Close()
		if rerr == nil && string(hdr[:4]) == "QFI\xfb" {
			if size := binary.BigEndian.Uint64(hdr[24:]); size > 0 && size < 1<<62 {
				return int64(size >> 20), nil
			}
		}
	}
	out, err := exec.CommandContext(ctx, d.cfg.QEMUImgBinary, "info", "--output=json", "-f", "qcow2", path).Output()
	if err != nil {
		return 0, fmt.Errorf("reading size of disk %s: %w", path, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, fmt.Errorf("decoding qemu-img info of %s: %w", path, err)
	}
	return info.VirtualSize >> 20, nil
}

// writeSeed writes a NoCloud seed ISO (volume id "cidata") with user-data
// and meta-data, and network-config when the config has one. meta-data
// defaults to the VM's uid as instance-id and its name as hostname.
func writeSeed(path string, cfg hypervisor.VMConfig) (err error) {
	ci := cfg.CloudInit
	meta := ci.MetaData
	if meta == "" {
		meta = fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", cfg.UID, cfg.Name)
	}
	user := ci.UserData
	if user == "" {
		user = "#cloud-config\n"
	}
	w, err := iso9660.NewWriter()
	if err != nil {
		return fmt.Errorf("making seed iso writer: %w", err)
	}
	defer w.Cleanup()
	files := []struct{ name, data string }{{"user-data", user}, {"meta-data", meta}}
	if ci.NetworkConfig != "" {
		files = append(files, struct{ name, data string }{"network-config", ci.NetworkConfig})
	}
	for _, f := range files {
		if err := w.AddFile(strings.NewReader(f.data), f.name); err != nil {
			return fmt.Errorf("adding %s to seed iso: %w", f.name, err)
		}
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating seed iso: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("writing seed iso: %w", cerr)
		}
	}()
	if err := w.WriteTo(out, "cidata"); err != nil {
		return fmt.Errorf("writing seed iso: %w", err)
	}
	return nil
}
