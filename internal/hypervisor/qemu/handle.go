package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/polyvisor/polyvisor/internal/atomicfile"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// Files in a VM's directory.
const (
	handleFile  = "handle.json"
	qmpSock     = "qmp.sock"
	serialSock  = "serial.sock"
	vncSock     = "vnc.sock"
	consoleLog  = "console.log"
	qemuLog     = "qemu.log"
	pidFile     = "qemu.pid"
	seedISO     = "seed.iso"
	nbdSock     = "nbd.sock" // the NBD server of a VM migrating in
	keptDirName = "kept"
)

// Keys of Handle.Extra.
const (
	extraQMP      = "qmp"
	extraSerial   = "serial"
	extraVNC      = "vnc"
	extraSockLink = "sockLink" // short symlink to the VM dir, when sockets need one
	extraSeed     = "seed"
)

// maxSockPath keeps unix socket paths under the 108-byte sun_path limit
// (107 characters and a NUL), with a margin.
const maxSockPath = 100

// LoadHandle reads the handle Create persisted in a VM's directory.
func LoadHandle(dir string) (*hypervisor.Handle, error) {
	b, err := os.ReadFile(filepath.Join(dir, handleFile))
	if err != nil {
		return nil, fmt.Errorf("reading vm handle: %w", err)
	}
	var h hypervisor.Handle
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("decoding vm handle %s: %w", dir, err)
	}
	if err := checkHandle(&h); err != nil {
		return nil, err
	}
	return &h, nil
}

func checkHandle(h *hypervisor.Handle) error {
	if h == nil || h.Dir == "" || h.UID == "" {
		return errors.New("checking vm handle: handle has no directory or uid")
	}
	if h.Driver != "" && h.Driver != DriverName {
		return fmt.Errorf("checking vm handle: handle belongs to driver %q", h.Driver)
	}
	if h.Version > hypervisor.HandleVersion {
		return fmt.Errorf("checking vm handle: version %d is newer than %d", h.Version, hypervisor.HandleVersion)
	}
	return nil
}

// saveHandle writes the handle into its VM's directory atomically and
// durably (temp file, fsync, rename, fsync of the directory).
func saveHandle(h *hypervisor.Handle) error {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding vm handle: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(h.Dir, handleFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving vm handle: %w", err)
	}
	return nil
}

// sockets decides where a VM's unix sockets live: in its directory when
// the paths fit in sun_path, else behind a short symlink to the directory
// in the run dir. It records the choice in the handle.
func (d *Driver) sockets(h *hypervisor.Handle) error {
	base := h.Dir
	link := ""
	if len(filepath.Join(h.Dir, serialSock)) > maxSockPath {
		sum := sha256.Sum256([]byte(h.Dir))
		run := d.runDirOnce()
		link = filepath.Join(run, hex.EncodeToString(sum[:8]))
		base = link
		if len(filepath.Join(base, serialSock)) > maxSockPath {
			return fmt.Errorf("choosing socket paths: run dir %s is too long for unix sockets", run)
		}
	}
	if h.Extra == nil {
		h.Extra = map[string]string{}
	}
	h.Extra[extraQMP] = filepath.Join(base, qmpSock)
	h.Extra[extraSerial] = filepath.Join(base, serialSock)
	h.Extra[extraVNC] = filepath.Join(base, vncSock)
	if link != "" {
		h.Extra[extraSockLink] = link
	} else {
		delete(h.Extra, extraSockLink)
	}
	return nil
}

// ensureSockLink (re)creates the short symlink to the VM dir, if the VM
// uses one. /run is emptied at boot, so Start and Recover call it.
func ensureSockLink(h *hypervisor.Handle) error {
	link := h.Extra[extraSockLink]
	if link == "" {
		return nil
	}
	if target, err := os.Readlink(link); err == nil && target == h.Dir {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		return fmt.Errorf("making socket link dir: %w", err)
	}
	os.Remove(link)
	if err := os.Symlink(h.Dir, link); err != nil {
		return fmt.Errorf("linking short socket dir: %w", err)
	}
	return nil
}

// resolveRunDir is where short socket links go.
func (d *Driver) resolveRunDir() string {
	if d.cfg.RunDir != "" {
		return d.cfg.RunDir
	}
	return defaultRunDir()
}

func defaultRunDir() string {
	if err := os.MkdirAll("/run/polyvisor", 0o700); err == nil {
		return "/run/polyvisor"
	}
	// Not root: a directory of our own in the shared temp dir, which
	// another local user could have made first (with links or a probe
	// answer of their choosing in it): use it only if it is ours alone.
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("polyvisor-%d", os.Getuid()))
	if err := privateDir(dir); err != nil {
		if d, err := os.MkdirTemp("", "polyvisor-run-"); err == nil {
			return d
		}
	}
	return dir
}

// privateDir makes dir, or accepts it when it is a directory (not a link)
// owned by this user and closed to others.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is not a private directory of this user", dir)
	}
	return nil
}

// pathsOf returns the command-line paths of a VM from its handle.
func pathsOf(h *hypervisor.Handle) Paths {
	return Paths{
		Dir:        h.Dir,
		QMP:        h.Extra[extraQMP],
		Serial:     h.Extra[extraSerial],
		VNC:        h.Extra[extraVNC],
		ConsoleLog: filepath.Join(h.Dir, consoleLog),
		PIDFile:    filepath.Join(h.Dir, pidFile),
		Disks:      h.Disks,
		Seed:       h.Extra[extraSeed],
		EFICode:    h.Extra[extraEFICode],
		EFIVars:    h.Extra[extraEFIVars],
	}
}
